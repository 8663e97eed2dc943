"""`cnnkit serve`: the HTTP service (the `serve` extra). Never imports torch."""

from __future__ import annotations

import click

from cnnkit.cli.common import (
    TRUST_INT8,
    Finite,
    engine_arg,
    engine_options,
    make_classifier,
    require,
    runs_on_text,
    shown,
)
from cnnkit.serve.config import HTTP_PARSERS, ServeConfig, TritonEngineConfig, classifier_options
from cnnkit.spec import DEVICES

S = ServeConfig()  # every default below is the library's: one source
T = TritonEngineConfig(model="")
MB = 2**20


@click.command()
@click.argument("model", type=click.Path())
@click.option("--host", default=T.host, show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=T.http_port, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default=T.device, show_default=True)
@shown(
    "--max-batch", click.IntRange(1, 4096), S.max_batch, "Most images per model call (1 turns dynamic batching off)."
)
@shown(
    "--max-delay-ms",
    Finite(0, 1000),
    S.max_delay_ms,
    "Longest a batch may wait for more requests, and only while requests arrive together (0: never wait; what "
    "queues while the model runs is batched anyway: measured fastest on CPUs, benchmarks/results/serve_load.json).",
)
@click.option("--max-body-mb", type=Finite(0.01, 1024), default=S.max_body_bytes / MB, show_default=True)
@click.option(
    "--max-images", type=click.IntRange(1, 4096), default=S.max_images, show_default=True, help="Per request."
)
@click.option(
    "--threads",
    type=click.IntRange(1, 512),
    default=None,
    help="Inference threads (default: one per core but one, which the HTTP side keeps for itself).",
)
@shown(
    "--max-pixels",
    click.IntRange(1, 100_000_000),
    S.max_image_pixels,
    "Most pixels of one uploaded image before it is resized (checked from its header, before decoding).",
)
@shown(
    "--drain-s",
    Finite(0, 300),
    S.drain_s,
    "After SIGTERM: keep answering this long, with Connection: close and /readyz 503, then shut down.",
)
@shown(
    "--read-timeout-s",
    Finite(0.1, 300),
    S.request_timeout_s,
    "Most time to read and decode one request's body (/v1 and /v2); beyond it, 503.",
)
@shown(
    "--head-timeout-s",
    Finite(0.1, 3600),
    S.head_timeout_s,
    "Most time for a request's line and headers to arrive (slow heads, slowloris); beyond it, 408.",
)
@shown(
    "--max-inflight-mb",
    Finite(1, 65_536),
    S.max_inflight_bytes / MB,
    "Request bodies held in memory at once, until decoded; beyond it, new bodies get 503.",
)
@shown(
    "--http",
    click.Choice(HTTP_PARSERS),
    S.http,
    "HTTP parser: httptools (faster) or h11; both refuse heads over 64 KB or slower than --head-timeout-s.",
)
@engine_options(
    ("triton",),
    " triton: a real Triton Inference Server through PyTriton (the 'triton' extra; HTTP on --port), running the "
    "model with engine auto.",
)
@click.option(
    "--requests",
    type=click.IntRange(1, 64),
    default=None,
    help="With --engine openvino: OpenVINO's THROUGHPUT mode, N batches in flight at once (each on its share of the "
    "threads); engine auto uses it where optimize measured it fastest with batches in flight.",
)
@TRUST_INT8
@click.option("--model-name", default=None, help="The model's name in /v2 paths (default: cnnkit-<dataset>).")
@click.option(
    "--open-statistics",
    is_flag=True,
    help="triton engine: serve Triton's statistics API without PyTriton's access token (perf_analyzer reads it).",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"KServe V2 over gRPC on this port too (the 'grpc' extra; 0: any free port); the triton engine's gRPC port "
    f"(default {T.grpc_port}).",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also answer /healthz and /readyz on this port, from a process of their own (probes stay fast under load).",
)
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=T.metrics_port, show_default=True, help="triton engine."
)
def serve(
    model,
    host,
    port,
    device,
    max_batch,
    max_delay_ms,
    max_body_mb,
    max_images,
    threads,
    max_pixels,
    drain_s,
    read_timeout_s,
    head_timeout_s,
    max_inflight_mb,
    http,
    engine,
    streams,
    requests,
    trust_int8,
    model_name,
    open_statistics,
    grpc_port,
    health_port,
    metrics_port,
):
    """Serve an ONNX model over HTTP: cnnkit's API (POST /v1/predict, /healthz, /readyz, /v1/model, /metrics) and
    the KServe V2 protocol (/v2/...); or, with --engine triton, in Triton Inference Server (V2 over HTTP and gRPC)."""
    if engine == "triton":
        if streams is not None or requests is not None:
            raise click.BadParameter(
                "--engine triton runs the model with engine auto; --streams/--requests do not apply"
            )
        if health_port is not None:
            raise click.BadParameter("--engine triton answers Triton's own health endpoints; drop --health-port")
        ports = {"http_port": port, "grpc_port": T.grpc_port if grpc_port is None else grpc_port}
        ports["metrics_port"] = metrics_port
        _serve_triton(TritonEngineConfig(model=model, model_name=model_name, host=host, device=device, **ports,
                      max_batch=max_batch, max_delay_ms=max_delay_ms, open_statistics=open_statistics))  # fmt: skip
        return
    cfg = ServeConfig(
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        max_body_bytes=int(max_body_mb * MB),
        max_images=max_images,
        model_name=model_name,
        drain_s=drain_s,
        max_image_pixels=max_pixels,
        request_timeout_s=read_timeout_s,
        head_timeout_s=head_timeout_s,
        max_inflight_bytes=int(max_inflight_mb * MB),
        http=http,
        grpc_port=grpc_port,
        grpc_host=host,
        health_port=health_port,
        health_host=host,
    )
    if grpc_port is not None:
        require("grpc", "tritonclient.grpc")  # the grpc extra, named in one line when missing
    from cnnkit.serve import run  # the serve extra; the CLI names it when it is missing

    clf = make_classifier(
        model, device, engine=engine_arg(engine, streams, requests), **classifier_options(cfg, threads)
    )
    click.echo(
        f"cnnkit serve: {model} on {runs_on_text(clf)}, max batch {max_batch}, max delay {max_delay_ms} ms"
        + (f", {clf.in_flight} batches in flight" if clf.in_flight > 1 else ""),
        err=True,
    )
    run(clf, host, port, cfg)


def _serve_triton(cfg) -> None:
    """`--engine triton`: start Triton through PyTriton, say where (and the access token, if any), block."""
    from cnnkit.serve.triton_engine import TritonEngine, check_available

    check_available()
    triton = TritonEngine(cfg)
    click.echo(
        f"cnnkit serve --engine triton: {cfg.model} as {triton.model_name!r} on {triton.classifier.providers[0]}; "
        f"HTTP {cfg.host}:{cfg.http_port}, gRPC {cfg.host}:{cfg.grpc_port}, metrics {cfg.host}:{cfg.metrics_port}",
        err=True,
    )
    if triton.access_token and triton.restricted:
        click.echo(
            f"access token for Triton's {', '.join(triton.restricted)} APIs (header triton-access-token): "
            f"{triton.access_token}",
            err=True,
        )
    triton.serve()
