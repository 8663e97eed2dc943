"""The training plan: everything decided before the first step, built once (`build`) and read by the loop and each
epoch's save; for a resume, the saved state checked against the run asked for."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cnnkit.data.dataset import Dataset
from cnnkit.errors import CheckpointError, DataError, option_error
from cnnkit.spec import SEED_ARCH, WEIGHTS_NAME, ModelConfig
from cnnkit.train import checkpoint, distributed, nets, resume
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import Split, normalisation, split_validation, stream_reason
from cnnkit.train.device import choose_precision, resolve_torch_device
from cnnkit.train.stepper import choose_graph, measure_step_rate

if TYPE_CHECKING:
    import torch

    from cnnkit.train.checkpoint import Checkpoint
    from cnnkit.train.nets.weights import Fitted


@dataclass(frozen=True, kw_only=True)
class Resumed:
    """A run's last completed epoch, to continue from."""

    state: resume.TrainState
    optimizer: dict[int, dict[str, Any]]  # the optimizer's tensors
    weights: dict[str, Any]  # the last epoch's model weights
    checkpoint: Checkpoint  # the best epoch's


@dataclass(frozen=True, kw_only=True)
class TrainPlan:
    """Everything decided before the first step: what the loop and each epoch's save work from."""

    dataset: Dataset
    cfg: TrainConfig
    out_dir: Path
    world: distributed.World
    device: torch.device
    precision: str
    precision_reason: str
    cuda_graph: bool  # capture the steps in a CUDA graph (train.stepper)
    steps_reason: str
    split: Split
    mean: tuple[float, ...]  # per channel
    std: tuple[float, ...]
    config: ModelConfig
    recipe: dict[str, Any]
    resumed: Resumed | None
    t_start: float
    tuning: dict[str, Any]  # how `--recipe auto` chose the recipe (empty: not tuned)
    plot: bool = True  # write curves.png (a tuning trial does not)
    stream: str = ""  # why the images are streamed from the host batch by batch (empty: held on the device)
    fitted: Fitted | None = None  # what the weights started from (`--weights`) filled in; None: fresh weights


def check_inputs(dataset: Dataset, cfg: TrainConfig, world: distributed.World) -> tuple[ModelConfig, Fitted | None]:
    """The model configuration the data calls for and what `--weights` fills in of it, or DataError."""
    if cfg.batch_size < world.size:
        raise option_error(
            DataError, "batch_size", cfg.batch_size, f"smaller than the {world.size} processes it is split over"
        )
    c, h, w = dataset.train_images.shape[1:]
    seed = cfg.arch == SEED_ARCH
    if h != w or (seed and h % 4):
        rule = "square images with a side divisible by 4" if seed else "square images"
        raise DataError(f"{dataset.source}: images are {h}x{w}; the model needs {rule} (--image-size 32, for example)")
    wanted = ModelConfig(
        arch=cfg.arch, in_channels=c, num_classes=len(dataset.classes), image_size=h, dropout=cfg.dropout
    ).to_dict()
    try:
        config = ModelConfig.from_dict(wanted)  # the bounds every checkpoint is held to, before any allocation
    except CheckpointError as exc:
        raise DataError(f"{dataset.source}: no model can be built for this data: {exc}") from None
    if not dataset.train_images.size or int(dataset.train_images.max()) == int(dataset.train_images.min()):
        raise DataError(f"{dataset.source}: every training pixel has the same value; there is nothing to learn")
    return config, nets.check(config, cfg.weights)


def torch_device(cfg: TrainConfig, world: distributed.World) -> torch.device:
    """Where this process trains: the device asked for (CUDA: this rank's GPU under torchrun), or DeviceError."""
    import torch

    device = resolve_torch_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    return device


class Checked(NamedTuple):
    device: torch.device  # where this process trains
    config: ModelConfig  # the model the data calls for
    stream: str = ""  # why the images are streamed from the host batch by batch (empty: held on the device)
    fitted: Fitted | None = None  # what `--weights` filled in


def check(dataset: Dataset, cfg: TrainConfig, world: distributed.World) -> Checked:
    """The device and the model configuration, or the one-line error, before any folder is made or group joined."""
    device = torch_device(cfg, world)
    config, fitted = check_inputs(dataset, cfg, world)
    return Checked(device, config, stream_reason(dataset, device), fitted)


def build(
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: Path,
    world: distributed.World,
    *,
    checked: Checked,
    resume_run: bool,
    t_start: float,
    tuning: dict[str, Any] | None = None,
    plot: bool = True,
) -> TrainPlan:
    """The plan, built once from the inputs already checked (`check`): data split, normalisation, CUDA graph,
    precision (rank 0's, for every rank: `world` is the initialised one), the recipe at that precision, and for a
    resume the saved state, checked."""
    device, config, stream, fitted = checked
    per_rank = max(1, cfg.batch_size // world.size)
    split = split_validation(dataset, cfg.val_fraction)
    graph, steps_reason = choose_graph(cfg.cuda_graph, device, world.distributed, per_rank, len(split.train_labels))
    measure = functools.partial(measure_step_rate, config, device, per_rank, graph=graph)
    chosen = choose_precision(cfg.precision, device, measure, "cuda-graph" if graph else "eager")
    precision, precision_reason = distributed.from_rank0(world, chosen)
    mean, std = normalisation(split.train_images)
    if min(std) == 0:
        channel = std.index(0.0)
        raise DataError(f"{dataset.source}: channel {channel} has the same value in every training image")
    recipe = cfg.recipe(precision)
    resumed = _resumed(out_dir, recipe, dataset, config) if resume_run else None
    if resumed is not None:
        _check_progress(resumed.state, cfg, len(split.train_labels), out_dir)
    return TrainPlan(
        dataset=dataset,
        cfg=cfg,
        out_dir=out_dir,
        world=world,
        device=device,
        precision=precision,
        precision_reason=precision_reason,
        cuda_graph=graph,
        steps_reason=steps_reason,
        split=split,
        mean=mean,
        std=std,
        config=config,
        recipe=recipe,
        resumed=resumed,
        t_start=t_start,
        tuning=resumed.checkpoint.meta.tuning if resumed is not None else dict(tuning or {}),
        plot=plot,
        stream=stream,
        fitted=fitted if resumed is None else None,
    )


def _check_progress(saved: resume.TrainState, cfg: TrainConfig, n_train: int, out_dir: Path) -> None:
    """The saved epoch and step are where this recipe on this data puts a run after that epoch, or it was edited."""
    per_epoch = distributed.steps_per_epoch(n_train, cfg.batch_size, saved.world_size)
    expected = min(saved.epoch * per_epoch, cfg.max_steps or saved.epoch * per_epoch)
    if saved.epoch > cfg.n_epochs or saved.step != expected:
        raise CheckpointError(
            f"cannot resume {out_dir}: {resume.STATE_JSON} says epoch {saved.epoch}, step {saved.step}; this recipe "
            f"reaches step {expected} after epoch {saved.epoch} of {cfg.n_epochs}"
        )


def _resumed(out_dir: Path, recipe: dict[str, Any], dataset: Dataset, config: ModelConfig) -> Resumed:
    """The saved state of the run in `out_dir`, when it is the same run as the one asked for."""
    saved, opt_state, weights = resume.load(out_dir)
    ck = checkpoint.load(out_dir)
    problem = resume.mismatch(saved, recipe, dataset.fingerprint, config.to_dict())
    if problem:
        raise CheckpointError(f"cannot resume {out_dir}: {problem}")
    if ck.sha256 != saved.weights_sha256:
        raise CheckpointError(f"cannot resume {out_dir}: {WEIGHTS_NAME} is not from epoch {saved.best_epoch}")
    return Resumed(state=saved, optimizer=opt_state, weights=weights, checkpoint=ck)
