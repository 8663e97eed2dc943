"""The click layer: parse options, call one library function, render, set the exit code.

Heavy modules (torch, onnx, onnxruntime) are imported inside commands so `cnnkit --help` stays fast.
"""

from __future__ import annotations

import json
import sys

import click

from cnnkit import __version__
from cnnkit.errors import CnnkitError

DEVICES = ("auto", "cpu", "cuda")


class Group(click.Group):
    """Turns cnnkit and OS errors (user mistakes) into `Error: ...` and exit 1, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnnkitError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:  # unwritable --out, full disk, ...: the OS message names the file
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnkit")
def main() -> None:
    """Train, export, verify, benchmark and serve a small image CNN."""


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------------------------- train


@main.command()
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist", "sample"]), default=None,
              help="Dataset (default: MNIST, falling back to the bundled sample when offline).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with IDX files, or the download cache (default $CNNKIT_DATA_DIR or ~/.cache/cnnkit).")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True,
              help="Peak learning rate of the one-cycle AdamW schedule.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16 autocasts forward/backward where the device supports it.")
@click.option("--shift", type=click.IntRange(min=0, max=8), default=2, show_default=True,
              help="Random translation augmentation in pixels (0: off).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps (smoke runs).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default: runs/<timestamp>).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(dataset, data_dir, epochs, batch_size, lr, seed, device, precision, shift, max_steps, out, as_json):
    """Train the CNN and write a checkpoint."""
    from cnnkit.data import load_dataset
    from cnnkit.render import render_train
    from cnnkit.train import TrainConfig, default_out_dir
    from cnnkit.train import train as run_train

    loaded = load_dataset(dataset, data_dir)
    if loaded.warning:
        click.echo(f"Warning: {loaded.warning}", err=True)
    out_dir = out or default_out_dir()
    if not as_json:
        click.echo(f"Training on {loaded.dataset.name} ({len(loaded.dataset.train_labels):,} train / "
                   f"{len(loaded.dataset.test_labels):,} test) -> {out_dir}", err=True)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                      precision=precision, max_steps=max_steps, shift=shift)
    result = run_train(loaded.dataset, cfg, out_dir, progress=not as_json)
    for note in result.warnings:
        click.echo(f"Warning: {note}", err=True)
    if as_json:
        emit_json({**result.to_dict(), "warnings": [w for w in [loaded.warning, *result.warnings] if w]})
    else:
        click.echo(render_train(result))
    if result.interrupted:
        sys.exit(130)


# ------------------------------------------------------------------------------------ export, verify


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "all"]), default="all", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: the checkpoint's).")
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset (default: the exporter's).")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check parity before keeping the files.")
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option("--rtol", type=float, default=1e-3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(checkpoint, fmt, out, opset, verify, atol, rtol, as_json):
    """Export a checkpoint to ONNX and/or TorchScript (uint8 in, logits out)."""
    from cnnkit.export import FORMATS
    from cnnkit.export import export as run_export
    from cnnkit.render import render_export

    formats = FORMATS if fmt == "all" else (fmt,)
    result = run_export(checkpoint, out, formats, opset=opset, verify=verify, atol=atol, rtol=rtol)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_export(result))
    sys.exit(0 if result.ok else 1)


@main.command()
@click.argument("artefacts", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", type=click.Path(), default=None,
              help="Reference checkpoint (default: the one recorded in the artefact's metadata).")
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option("--rtol", type=float, default=1e-3, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(artefacts, checkpoint, atol, rtol, device, as_json):
    """Check eager PyTorch vs TorchScript vs ONNX Runtime parity; exit 1 on any mismatch."""
    from cnnkit.render import render_parity
    from cnnkit.verify import verify as run_verify

    report = run_verify(list(artefacts), checkpoint, device=device, atol=atol, rtol=rtol)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_parity(report))
    sys.exit(0 if report else 1)


# ----------------------------------------------------------------------------------- predict, doctor


def make_classifier(model: str, device: str, **kwargs):
    """A runtime Classifier whose provider fall-back warning is shown as one line, not a Python warning."""
    import warnings

    from cnnkit.runtime import Classifier, ProviderFallbackWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProviderFallbackWarning)
        clf = Classifier(model, device=device, **kwargs)
    for w in caught:
        click.echo(f"Warning: {w.message}", err=True)
    return clf


@main.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--invert/--no-invert", default=None,
              help="Force (or forbid) inverting dark-on-light images; default: detect and say so.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def predict(model, images, device, top_k, invert, as_json):
    """Classify image files (PNG, JPEG, PGM) with an exported ONNX model."""
    from dataclasses import asdict

    from cnnkit.predict import predict_files
    from cnnkit.render import render_predict

    report = predict_files(make_classifier(model, device), list(images), top_k=top_k, invert=invert)
    if as_json:
        emit_json({**asdict(report), "failed": report.failed})
    else:
        click.echo(render_predict(report))
        for r in report.results:
            if r.error:
                click.echo(f"Error: {r.error}", err=True)
    sys.exit(1 if report.failed else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json):
    """Check Python, torch, GPU and ONNX Runtime's CUDA provider; say how to fix what fails."""
    from cnnkit.doctor import diagnose
    from cnnkit.render import render_doctor

    report = diagnose()
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(render_doctor(report))
    sys.exit(0 if report.ok else 1)


# --------------------------------------------------------------------------------------------- bench


def _int_list(ctx, param, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return out


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--backends", default="eager,torchscript,onnx", show_default=True,
              help="Comma-separated: eager, torchscript, onnx, compile, eager-cudagraph, onnx-cudagraph.")
@click.option("--batch-sizes", default="1,8,64,256", show_default=True, callback=_int_list)
@click.option("--warmup", type=click.IntRange(min=1), default=10, show_default=True, help="Untimed iterations.")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Timed iterations per backend and batch.")
@click.option("--min-time", type=click.FloatRange(min=0.01), default=1.5, show_default=True,
              help="Timed seconds per backend and batch (when --iters is not given).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for every backend (default: all cores).")
@click.option("--tf32/--no-tf32", default=False, show_default=True,
              help="CUDA: allow TF32 math in every backend (torch and ONNX Runtime alike).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), default=None, help="Write results as JSON ('-': stdout).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), default=None, help="Write results as CSV.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Write a PNG plot.")
def bench(paths, device, backends, batch_sizes, warmup, iters, min_time, threads, tf32, json_file, csv_file,
          plot_file):
    """Benchmark eager vs TorchScript vs ONNX Runtime (latency percentiles, images/s)."""
    from cnnkit import report
    from cnnkit.bench import bench as run_bench
    from cnnkit.render import render_bench

    names = tuple(b.strip() for b in backends.split(",") if b.strip())
    to_stdout = json_file == "-"
    log = None if to_stdout else (lambda msg: click.echo(msg, err=True))
    result = run_bench(list(paths), device=device, backends=names, batch_sizes=batch_sizes, warmup=warmup,
                       iters=iters, min_time=min_time, threads=threads, tf32=tf32, progress=log)
    if to_stdout:
        emit_json(result.to_dict())
    else:
        click.echo(render_bench(result))
        if json_file:
            report.write_json(result, json_file)
    if csv_file:
        report.write_csv(result, csv_file)
    if plot_file:
        report.plot(result.to_dict(), plot_file)
    if any(r.fell_back for r in result.rows):
        click.echo("Warning: some rows fell back to CPU; they are not CUDA results", err=True)
    failed = sorted({r.backend for r in result.failed})
    if failed:  # the other backends' results are written above; the exit code still says something broke
        click.echo(f"Error: backend(s) {', '.join(failed)} failed (see the FAILED rows)", err=True)
        sys.exit(1)


# --------------------------------------------------------------------------------------------- serve


@main.command()
@click.argument("model", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most images per model call (1 turns dynamic batching off).")
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Longest wait for a batch to fill.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.01), default=8.0, show_default=True)
@click.option("--max-images", type=click.IntRange(min=1), default=256, show_default=True, help="Per request.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
def serve(model, host, port, device, max_batch, max_delay_ms, max_body_mb, max_images, threads):
    """Serve an ONNX model over HTTP (POST /v1/predict, /healthz, /readyz, /v1/model, /metrics)."""
    try:
        from cnnkit.serve import ServeConfig, run
    except ImportError as exc:
        raise click.ClickException(f"cnnkit serve needs the serve extra ({exc.name} missing): "
                                   "pip install 'cnnkit[serve]'") from None
    cfg = ServeConfig(max_batch=max_batch, max_delay_ms=max_delay_ms, max_body_bytes=int(max_body_mb * 2**20),
                      max_images=max_images)
    clf = make_classifier(model, device, intra_op_threads=threads, max_batch=max(max_batch, max_images))
    click.echo(f"cnnkit serve: {model} on {clf.providers[0]}, max batch {max_batch}, max delay {max_delay_ms} ms",
               err=True)
    run(clf, host, port, cfg)
