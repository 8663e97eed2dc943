"""`cnnkit train`: one process, several through torchrun (`--nproc`), or the continuation of a run (`--resume`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from cnnkit.cli.common import Finite, arch_option, emit_json, require, shown
from cnnkit.data.imagefolder import FolderOptions
from cnnkit.geometry import DEFAULT_SIDE, MAX_DEFAULT_SIDE, RESIZE
from cnnkit.spec import CUDA_GRAPH, DATASETS, DEVICES, TRAIN_PRECISIONS
from cnnkit.train.config import FLOAT_BOUNDS as F
from cnnkit.train.config import INT_BOUNDS as I
from cnnkit.train.config import RECIPE_FIELDS, TrainConfig

# options that define the run; with --resume they come from the run, and a different value given is refused
RECIPE_OPTIONS = (*(f for f in RECIPE_FIELDS if f != "weight_decay"), "precision", "arch")  # no weight-decay flag
D = TrainConfig()  # the defaults live in one place


@click.command()
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default=None,
    help="Dataset (default: MNIST, falling back to the bundled sample when offline).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with IDX files (and optionally classes.txt), or the download cache "
    "(default $CNNKIT_DATA_DIR or ~/.cache/cnnkit).",
)
@click.option("--classes", default=None, help="Class names in label order, comma-separated (default: classes.txt).")
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    default=None,
    help="Image folders: 1 (grayscale) or 3 (RGB); default 1 when every image is grayscale, else 3.",
)
@click.option(
    "--image-size",
    default=None,
    metavar="H[xW]",
    help=f"Image folders: the model's input size; default the images' own when they are all one square size of "
    f"at most {MAX_DEFAULT_SIDE} px divisible by 4, else {DEFAULT_SIDE}.",
)
@shown(
    "--resize",
    click.Choice(RESIZE),
    FolderOptions.resize,
    "Image folders (and, recorded in the model, every image it is given later): shorter-crop resizes the "
    "shorter side and crops the centre; stretch resizes to the size outright.",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Image folders: leave out files that do not decode (counted, named and recorded) instead of refusing.",
)
@click.option(
    "--arch",
    default=D.arch,
    show_default=True,
    callback=arch_option,
    help="The network: seed (the tutorial's two-conv CNN), a torchvision classification model (resnet18, "
    "mobilenet_v3_small, efficientnet_b0, ...; adapted to the input's channels and size), or your own "
    "package.module:factory, called as factory(num_classes=, in_channels=, image_size=(H, W)).",
)
@click.option(
    "--weights",
    default=None,
    metavar="FILE|torchvision",
    help="Start from these weights and fine-tune: a state dict (.safetensors, or .pt/.pth read as tensors only), "
    "or 'torchvision' for the architecture's pretrained file in the local torch hub cache (never downloaded). "
    "Tensors that fit load; the classifier head for your classes starts fresh.",
)
@shown(
    "--body-lr-scale",
    Finite(*F["body_lr_scale"], min_open=True),
    D.body_lr_scale,
    "With --weights: the body's learning rate as a fraction of --lr (the head's).",
)
@click.option(
    "--recipe",
    "recipe_mode",
    type=click.Choice(["auto", "default"]),
    default="auto",
    show_default=True,
    help="auto: short trials of a few regularisation strengths (augmentation, label smoothing, dropout) on the "
    "validation split pick the recipe, then it trains in full; default: the fixed default recipe. Options given "
    "explicitly are never changed.",
)
@click.option("--epochs", type=click.IntRange(*I["epochs"]), default=D.epochs, show_default=True)
@shown(
    "--batch-size",
    click.IntRange(*I["batch_size"]),
    D.batch_size,
    "Global batch: split across the processes of a torchrun/--nproc run.",
)
@shown(
    "--lr",
    Finite(*F["lr"], min_open=True),
    D.lr,
    "Peak learning rate of the one-cycle AdamW schedule (the same for any number of processes).",
)
@click.option("--seed", type=click.IntRange(*I["seed"]), default=D.seed, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@shown(
    "--precision",
    click.Choice(TRAIN_PRECISIONS),
    D.precision,
    "auto: bf16 autocast where the hardware runs it natively (CUDA 8.0+, CPUs with AMX), else fp32.",
)
@shown(
    "--cuda-graph",
    click.Choice(CUDA_GRAPH),
    D.cuda_graph,
    "Replay each training step from a captured CUDA graph (forward, backward; AdamW and the schedule run as "
    "usual). auto: on CUDA in one process; on: fail where it cannot be used; off: eager steps.",
)
@shown("--shift", click.IntRange(*I["shift"]), D.shift, "Random translation augmentation in pixels (0: off).")
@shown("--rotate", Finite(*F["rotate"]), D.rotate, "Random rotation augmentation, degrees each way (0: off).")
@shown("--label-smoothing", Finite(*F["label_smoothing"]), D.label_smoothing, "Cross-entropy label smoothing.")
@click.option(
    "--flip/--no-flip",
    default=D.flip,
    show_default=True,
    help="Random left-right mirroring (for mirror-symmetric classes such as clothes; not digits).",
)
@shown("--dropout", Finite(*F["dropout"]), D.dropout, "Dropout before the fully connected layers.")
@shown(
    "--val-fraction",
    Finite(*F["val_fraction"]),
    D.val_fraction,
    "Share of the training images held out for validation (a fixed choice, the same for every seed).",
)
@shown(
    "--patience",
    click.IntRange(*I["patience"]),
    D.patience,
    "Early stopping: end after this many epochs without a better validation accuracy (0: run every epoch). "
    "The checkpoint always holds the best epoch on validation.",
)
@click.option(
    "--max-steps", type=click.IntRange(*I["max_steps"]), default=None, help="Stop after this many steps (smoke runs)."
)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default: runs/<timestamp>).")
@click.option("--force", is_flag=True, help="Replace the run in a non-empty --out.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Continue this run from its last completed epoch (same data and recipe).",
)
@click.option(
    "--nproc",
    type=click.IntRange(1, 256),
    default=None,
    help="Train with N processes on this machine (runs torchrun --standalone --nproc-per-node N).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def train(
    ctx, dataset, data_dir, classes, out, force, resume_dir, nproc, device, cuda_graph, as_json, recipe_mode, **recipe
):
    """Train the CNN and write a checkpoint (plus resume state, metrics.jsonl and curves.png)."""
    import importlib.util

    from cnnkit.train import distributed
    from cnnkit.train.rundir import check_out_dir, default_out_dir

    if importlib.util.find_spec("torch") is None:
        require("torch")  # the one-line missing-extra error
    if nproc is not None:  # the launcher itself never imports torch: torchrun and its workers do
        args = _argv_without(ctx, "nproc")
        if resume_dir is None:
            out = out or str(default_out_dir())  # one folder for every rank
            check_out_dir(Path(out), force)  # a user mistake is one line here, not a failure report per rank
            if "--out" not in args:
                args += ["--out", out]
        sys.exit(distributed.launch(nproc, args))

    from cnnkit.data.datasets import parse_classes, with_classes
    from cnnkit.train.run import train as run_train

    warning = None
    folder = _folder_options(recipe, as_json)
    if resume_dir is not None:
        if out is not None and out != resume_dir:
            raise click.UsageError("--resume continues the run in its own folder; drop --out")
        from cnnkit.train.resume import settings_of_run

        given = {name: recipe[name] for name in RECIPE_OPTIONS}
        recipe, ds = settings_of_run(resume_dir, given, _explicit(ctx), data_dir)  # read as it was the first time
        out_dir = resume_dir
    else:
        ds, warning = _load(dataset, data_dir, folder)
        if classes is not None:
            ds = with_classes(ds, parse_classes(classes))
        out_dir = out or default_out_dir()
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    if not as_json and distributed.from_env().is_main:
        click.echo(
            f"Training on {ds.name} ({len(ds.train_labels):,} train / {len(ds.test_labels):,} test) -> {out_dir}",
            err=True,
        )
    cfg = TrainConfig(device=device, cuda_graph=cuda_graph, **recipe)
    tuning = None
    if recipe_mode == "auto" and resume_dir is None:
        from cnnkit.train import tune
        from cnnkit.train.rundir import check_out_dir

        explicit = {k: v for k, v in recipe.items() if k in _explicit(ctx)}
        main_rank = distributed.from_env().is_main
        say = (lambda line: click.echo(line, err=True)) if main_rank and not as_json else (lambda line: None)
        cfg, tuning = tune.recipe_for(ds, cfg, explicit, lambda: check_out_dir(Path(out_dir), force), say)
    result = run_train(
        ds, cfg, out_dir, progress=not as_json, resume_run=resume_dir is not None, force=force, tuning=tuning
    )
    _report(result, warning, as_json)


def _folder_options(recipe: dict, as_json: bool) -> FolderOptions:
    """The image-folder options, taken out of the command's keyword arguments; progress on rank 0's stderr."""
    from cnnkit.geometry import parse_size
    from cnnkit.train import distributed
    from cnnkit.train.progress import PhaseProgress, Progress

    channels, size = recipe.pop("channels"), recipe.pop("image_size")
    resize, skip_bad = recipe.pop("resize"), recipe.pop("skip_bad")
    shown = distributed.from_env().is_main and not as_json
    return FolderOptions(
        channels=int(channels) if channels else None,
        size=parse_size(size) if size else None,
        resize=resize,
        skip_bad=skip_bad,
        say=(lambda line: click.echo(line, err=True)) if shown else None,
        progress=PhaseProgress(Progress()) if shown else None,
    )


def _load(dataset: str | None, data_dir: str | None, folder: FolderOptions):
    """The dataset asked for (MNIST downloaded where it is not on disk and $CNNKIT_OFFLINE is not set), and the
    warning when the default fell back to the bundled sample."""
    from cnnkit.data.datasets import load_dataset
    from cnnkit.train.download import downloader

    loaded = load_dataset(dataset, data_dir, download=downloader(), folder=folder)
    return loaded.dataset, loaded.warning


def _report(result, warning: str | None, as_json: bool) -> None:
    """The result (rank 0 reports for the world), and the exit code: 130 interrupted, 1 did not learn."""
    from cnnkit.cli.render import render_train

    if result.rank != 0:
        sys.exit(130 if result.interrupted else 0)
    if as_json:
        emit_json({**result.to_dict(), "warnings": [warning] if warning else []})
    else:
        click.echo(render_train(result))
    if result.interrupted:
        sys.exit(130)
    if result.failure:  # the checkpoint is kept, for a look; the exit code says it is no use
        click.echo(f"Error: {result.failure}", err=True)
        sys.exit(1)


def _explicit(ctx: click.Context) -> set[str]:
    """The options given on this command line (not defaults)."""
    return {
        p.name for p in ctx.command.params if p.name and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE
    }


def _argv_without(ctx: click.Context, skip: str) -> list[str]:
    """The options given on this command line, less `skip`, as arguments again (for torchrun's workers)."""
    args: list[str] = []
    for param in ctx.command.params:
        if param.name == skip or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            if value:
                args.append(param.opts[0])
        else:
            args += [param.opts[0], str(value)]
    return args
