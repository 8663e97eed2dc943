"""`cnnkit serve`: the HTTP service (the `serve` extra). Never imports torch."""

from __future__ import annotations

import click

from cnnkit.cli.common import DEVICES, make_classifier


@click.command()
@click.argument("model", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Most images per model call (1 turns dynamic batching off).",
)
@click.option(
    "--max-delay-ms",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Longest wait for a batch to fill.",
)
@click.option("--max-body-mb", type=click.FloatRange(min=0.01), default=8.0, show_default=True)
@click.option("--max-images", type=click.IntRange(min=1), default=256, show_default=True, help="Per request.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
def serve(model, host, port, device, max_batch, max_delay_ms, max_body_mb, max_images, threads):
    """Serve an ONNX model over HTTP (POST /v1/predict, /healthz, /readyz, /v1/model, /metrics)."""
    from cnnkit.serve import ServeConfig, run  # the serve extra; the CLI names it when it is missing

    cfg = ServeConfig(
        max_batch=max_batch, max_delay_ms=max_delay_ms, max_body_bytes=int(max_body_mb * 2**20), max_images=max_images
    )
    clf = make_classifier(model, device, intra_op_threads=threads, max_batch=max(max_batch, max_images))
    click.echo(
        f"cnnkit serve: {model} on {clf.providers[0]}, max batch {max_batch}, max delay {max_delay_ms} ms", err=True
    )
    run(clf, host, port, cfg)
