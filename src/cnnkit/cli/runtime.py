"""`cnnkit predict`, `evaluate` and `doctor`: the runtime side (base install, no torch)."""

from __future__ import annotations

import sys

import click

from cnnkit.cli.common import TRUST_INT8, check_destinations, emit_json, engine_arg, engine_options, make_classifier
from cnnkit.spec import DATASETS, DEVICES


@click.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--top-k", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option(
    "--invert/--no-invert",
    default=None,
    help="Force (or forbid) inverting dark-on-light images; default: detect and say so.",
)
@engine_options()
@TRUST_INT8
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def predict(model, images, device, top_k, invert, engine, streams, trust_int8, as_json):
    """Classify image files (PNG, JPEG, PGM) with an exported ONNX model."""
    from dataclasses import asdict

    from cnnkit.cli.render import render_predict
    from cnnkit.runtime.predict import predict_files

    clf = make_classifier(model, device, engine=engine_arg(engine, streams), trust_int8=trust_int8)
    report = predict_files(clf, list(images), top_k=top_k, invert=invert)
    if as_json:
        emit_json({**asdict(report), "failed": report.failed})
    else:
        click.echo(render_predict(report))
        for r in report.results:
            if r.error:
                click.echo(f"Error: {r.error}", err=True)
            elif r.warning:
                click.echo(f"Warning: {r.warning}", err=True)
    sys.exit(1 if report.failed else 0)


@click.command()
@click.argument("model", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(model, as_json):
    """Check Python, torch, GPU, ONNX Runtime's CUDA provider and the engines; say how to fix what fails.

    With MODEL (an .onnx file), also say what --engine auto runs it with."""
    from cnnkit.cli.render import render_doctor
    from cnnkit.doctor import diagnose

    report = diagnose(model)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(render_doctor(report))
    sys.exit(0 if report.ok else 1)


@click.command()
@click.argument("model", type=click.Path())
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default=None,
    help="Labelled data (default: the dataset the model records, checked by its fingerprint).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="A folder with the four IDX files.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option(
    "--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Write the confusion matrix as a PNG."
)
@engine_options()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(model, dataset, data_dir, split, device, engine, streams, plot_file, as_json):
    """Accuracy, per-class accuracy and confusion matrix of an exported model on labelled images."""
    from cnnkit.bench.evaluate import evaluate as run_evaluate
    from cnnkit.cli.render import render_evaluate

    check_destinations(plot_file)
    result = run_evaluate(model, dataset, data_dir, device=device, split=split, engine=engine_arg(engine, streams))
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(render_evaluate(result))
    if plot_file:
        from cnnkit.bench.report import plot_confusion

        plot_confusion(result, plot_file)
