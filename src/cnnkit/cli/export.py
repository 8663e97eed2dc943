"""`cnnkit export`, `verify`: the torch side that makes and checks artefacts (the `train` extra)."""

from __future__ import annotations

import sys

import click

from cnnkit.cli.common import (
    arch_option,
    dumps,
    gate_engine_options,
    gate_from,
    gate_options,
    int_list,
    require,
    shown,
    tolerance_options,
    trust_arch,
)
from cnnkit.export.options import FORMAT_CHOICES, ExportOptions, formats_for
from cnnkit.spec import BENCH_DEVICES, EXPORT_PRECISIONS, QUANTIZERS, TRITON_INSTANCE_KINDS
from cnnkit.triton_config import TritonOptions

E, T = ExportOptions(), TritonOptions()  # every default below is the library's: one source


def foreign_options(f):
    """`export --arch A --weights W --input CxHxW --classes ...`: a state dict trained elsewhere (train.external)."""
    from cnnkit.data.imagefolder import FolderOptions
    from cnnkit.geometry import RESIZE

    for option in reversed([
        click.option("--arch", default=None, callback=arch_option, metavar="NAME|PACKAGE.MODULE:FACTORY",
                     help="The network of the checkpoint or --weights: a torchvision name, or your own module (cnnkit "
                     "imports that code only when it is given here)."),
        click.option("--weights", default=None, type=click.Path(dir_okay=False),
                     help="Export a state dict trained elsewhere (.safetensors, or .pt/.pth read as tensors only) "
                     "instead of a checkpoint; with --arch, --input, --classes and --out."),
        click.option("--input", "input_shape", default=None, metavar="CxHxW", help="--weights: the pixels it takes."),
        click.option("--classes", default=None, help="--weights: class names in output order, comma-separated, or "
                     "a file with one per line."),
        click.option("--mean", default="0", show_default=True, help="--weights: per-channel mean on the [0, 1] scale "
                     "(one number, or one per channel), as the network was trained with."),
        click.option("--std", default="1", show_default=True, help="--weights: per-channel std, likewise."),
        click.option("--resize", type=click.Choice(RESIZE), default=FolderOptions.resize, show_default=True,
                     help="--weights: how an image of another size is fitted to --input."),
    ]):  # fmt: skip
        f = option(f)
    return f


@click.command()
@click.argument("checkpoint", type=click.Path(), required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    default="all",
    show_default=True,
    help="onnx (model.onnx), torchscript (model.ts), exported (torch.export's ExportedProgram, model.pt2), aoti (an "
    "AOTInductor package compiled for this machine, model.aoti.pt2; about a minute), all (every format but aoti), "
    "triton (a Triton model repository: config.pbtxt, labels, 1/model.onnx, in --out).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder (default: the checkpoint's; for triton, its triton/ subfolder).",
)
@click.option(
    "--opset",
    type=click.IntRange(18, 30),
    default=None,
    help="ONNX opset, 18 or later (the dynamo exporter's floor; default: the exporter's).",
)
@click.option(
    "--verify/--no-verify", default=E.verify, show_default=True, help="Check parity before keeping the files."
)
@tolerance_options
@shown(
    "--precision",
    click.Choice(EXPORT_PRECISIONS),
    E.precision,
    "int8: static INT8 (CPU); fp16: for CUDA (no faster on a CPU). ONNX only.",
)
@shown(
    "--quantizer",
    click.Choice(QUANTIZERS),
    E.quantizer,
    "INT8: onnxruntime (ONNX Runtime's quantizer, cnnkit's recipe: the first convolution and the output layer "
    "stay fp32) or nncf (NNCF's performance preset, every layer; the 'nncf' extra).",
)
@click.option(
    "--fold/--no-fold",
    default=E.fold,
    show_default=True,
    help="Fold fc1 and fc2 into one exact linear layer (--no-fold mirrors the training module).",
)
@shown(
    "--calibration-images", click.IntRange(1, 100_000), E.calibration_images, "INT8: training images to calibrate on."
)
@shown("--calibration-seed", click.IntRange(0, 2**32 - 1), E.calibration_seed, "INT8: which images.")
@gate_options
@gate_engine_options
@click.option("--model-name", default=None, help="triton: the model's name (default: cnnkit-<dataset>).")
@click.option(
    "--max-batch-size", type=click.IntRange(1, 65_536), default=T.max_batch_size, show_default=True, help="triton."
)
@click.option(
    "--preferred-batch-sizes",
    default=",".join(map(str, T.preferred_batch_sizes)),
    show_default=True,
    callback=int_list,
    help="triton: the dynamic batcher's preferred sizes.",
)
@shown("--queue-delay-us", click.IntRange(0, 10_000_000), T.max_queue_delay_us, "triton.")
@shown(
    "--instance-kind",
    click.Choice(TRITON_INSTANCE_KINDS),
    T.instance_kind,
    "triton: where instances run (auto: a GPU where Triton has one).",
)
@click.option(
    "--instances", type=click.IntRange(1, 64), default=T.instances, show_default=True, help="triton: per device."
)
@click.option("--with-torchscript", is_flag=True, help="triton: also a pytorch_libtorch model (<name>-libtorch).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@foreign_options
def export(
    checkpoint,
    fmt,
    out,
    opset,
    verify,
    atol,
    rtol,
    precision,
    quantizer,
    fold,
    calibration_images,
    calibration_seed,
    model_name,
    max_batch_size,
    preferred_batch_sizes,
    queue_delay_us,
    instance_kind,
    instances,
    with_torchscript,
    as_json,
    arch,
    weights,
    **gates,
):
    """Export a checkpoint to ONNX, TorchScript, torch.export or AOTInductor (uint8 in, logits out), or a Triton
    model repository; with --weights, a state dict trained elsewhere, made a checkpoint in --out first."""
    require("torch", "onnx")
    from cnnkit.cli.render import render_export
    from cnnkit.export.exporter import export as run_export

    foreign = {k: gates.pop(k) for k in ("input_shape", "classes", "mean", "std", "resize")}
    if weights is not None and checkpoint is not None:
        raise click.UsageError("give a CHECKPOINT or --weights, not both")
    if weights is not None:
        checkpoint = _from_weights(arch, weights, out, **foreign)
        if not as_json:
            click.echo(f"made a checkpoint of {weights}: {checkpoint}", err=True)
    elif checkpoint is None:
        raise click.UsageError("give a CHECKPOINT (a run folder or its model.safetensors), or --weights")

    options = ExportOptions(
        formats=formats_for(fmt, precision),
        precision=precision,
        quantizer=quantizer,
        fold=fold,
        opset=opset,
        verify=verify,
        calibration_images=calibration_images,
        calibration_seed=calibration_seed,
        gate=gate_from(atol=atol, rtol=rtol, **gates),
    )
    if fmt == "triton":
        from cnnkit.export.triton_repo import write_repository
        from cnnkit.train.checkpoint import resolve

        opts = TritonOptions(
            model_name=model_name,
            max_batch_size=max_batch_size,
            preferred_batch_sizes=preferred_batch_sizes,
            max_queue_delay_us=queue_delay_us,
            instance_kind=instance_kind,
            instances=instances,
            torchscript=with_torchscript,
        )
        result = write_repository(checkpoint, out or str(resolve(checkpoint).parent / "triton"), opts, options)
    else:
        if precision == "fp16" and not as_json:
            click.echo("Note: fp16 is for CUDA; on a CPU it runs no faster than fp32.", err=True)
        result = run_export(checkpoint, out, options, progress=lambda line: click.echo(line, err=True))
    click.echo(dumps(result.to_dict()) if as_json else render_export(result))
    sys.exit(0 if result.ok else 1)


def _from_weights(arch, weights, out, *, input_shape, classes, mean, std, resize) -> str:
    """The checkpoint made in `out` of a state dict trained elsewhere (train.external)."""
    from pathlib import Path

    from cnnkit.data.datasets import parse_classes, read_classes_file
    from cnnkit.geometry import Geometry
    from cnnkit.train import external

    missing = [
        f"--{n}" for n, v in (("arch", arch), ("input", input_shape), ("classes", classes), ("out", out)) if not v
    ]
    if missing:
        raise click.UsageError(f"--weights needs {', '.join(missing)}")
    shape = input_shape.lower().split("x")
    if len(shape) != 3 or not all(p.isdigit() for p in shape):
        raise click.BadParameter(f"{input_shape!r}: expected CxHxW, e.g. 3x224x224", param_hint="--input")
    c, h, w = map(int, shape)
    listed = Path(classes)
    names = (read_classes_file(listed.parent, listed.name) if listed.is_file() else None) or parse_classes(classes)
    spec = external.External(
        arch=arch, weights=weights, geometry=Geometry(channels=c, height=h, width=w, resize=resize, invert="never"),
        classes=names, mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"),
    )  # fmt: skip
    return str(external.make(spec, Path(out)))


def _numbers(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected numbers separated by commas", param_hint=name) from None


@click.command()
@click.argument("artefacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--checkpoint",
    type=click.Path(),
    default=None,
    help="Reference checkpoint (default: the one recorded in the artefact's metadata).",
)
@tolerance_options
@click.option("--device", type=click.Choice(BENCH_DEVICES), default=E.gate.device, show_default=True)
@gate_options
@gate_engine_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@trust_arch
def verify(artefacts, checkpoint, atol, rtol, device, as_json, **gates):
    """Check eager PyTorch vs TorchScript vs ONNX Runtime parity; exit 1 on any mismatch.

    fp32 files must match value by value; INT8 and fp16 files are gated on the real test split.

    A TorchScript (.ts) file is a program: loading it runs code stored in it. Name only .ts files you trust.
    """
    require("torch", "onnx")
    from cnnkit.cli.render import render_parity
    from cnnkit.export.verify import verify as run_verify

    report = run_verify(list(artefacts), checkpoint, gate_from(atol=atol, rtol=rtol, device=device, **gates))
    click.echo(dumps(report.to_dict()) if as_json else render_parity(report))
    sys.exit(0 if report else 1)
