"""`cnnkit export`, `verify`: the torch side (the `train` extra)."""

from __future__ import annotations

import json
import sys

import click

from cnnkit.cli.common import gate_options, require

# ------------------------------------------------------------------------------------ export, verify


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "all"]), default="all", show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: the checkpoint's)."
)
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset (default: the exporter's).")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check parity before keeping the files.")
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option("--rtol", type=float, default=1e-3, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "int8", "fp16"]),
    default="fp32",
    show_default=True,
    help="int8: static INT8 (CPU); fp16: for CUDA (no faster on a CPU). ONNX only.",
)
@click.option(
    "--fold/--no-fold",
    default=True,
    show_default=True,
    help="Fold fc1 and fc2 into one exact linear layer (--no-fold mirrors the training module).",
)
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="INT8: training images to calibrate on.",
)
@click.option("--calibration-seed", type=int, default=0, show_default=True, help="INT8: which images.")
@gate_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(
    checkpoint,
    fmt,
    out,
    opset,
    verify,
    atol,
    rtol,
    precision,
    fold,
    calibration_images,
    calibration_seed,
    data_dir,
    min_agreement,
    max_accuracy_drop,
    as_json,
):
    """Export a checkpoint to ONNX and/or TorchScript (uint8 in, logits out)."""
    require("torch", "onnx")
    from cnnkit.build.export import FORMATS
    from cnnkit.build.export import export as run_export
    from cnnkit.cli.render import render_export

    formats = FORMATS if fmt == "all" else (fmt,)
    if precision != "fp32" and fmt == "all":
        formats = ("onnx",)  # reduced precision is an ONNX variant; the TorchScript file stays fp32
    if precision == "fp16" and not as_json:
        click.echo("Note: fp16 is for CUDA; on a CPU it runs no faster than fp32.", err=True)
    result = run_export(
        checkpoint,
        out,
        formats,
        opset=opset,
        verify=verify,
        atol=atol,
        rtol=rtol,
        precision=precision,
        fold=fold,
        calibration_images=calibration_images,
        calibration_seed=calibration_seed,
        data_dir=data_dir,
        min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop,
    )
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_export(result))
    sys.exit(0 if result.ok else 1)


@click.command()
@click.argument("artefacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--checkpoint",
    type=click.Path(),
    default=None,
    help="Reference checkpoint (default: the one recorded in the artefact's metadata).",
)
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option("--rtol", type=float, default=1e-3, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@gate_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(artefacts, checkpoint, atol, rtol, device, data_dir, min_agreement, max_accuracy_drop, as_json):
    """Check eager PyTorch vs TorchScript vs ONNX Runtime parity; exit 1 on any mismatch.

    fp32 files must match value by value; INT8 and fp16 files are gated on the real test split.
    """
    require("torch", "onnx")
    from cnnkit.build.verify import verify as run_verify
    from cnnkit.cli.render import render_parity

    report = run_verify(
        list(artefacts),
        checkpoint,
        device=device,
        atol=atol,
        rtol=rtol,
        data_dir=data_dir,
        min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_parity(report))
    sys.exit(0 if report else 1)


# ----------------------------------------------------------------------------------- predict, doctor
