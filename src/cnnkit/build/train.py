"""Training: one process or many (torchrun/DDP), checkpoint and resume state after every epoch, exact resume."""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cnnkit import atomic
from cnnkit.build import augment, curves, distributed, resume
from cnnkit.build.artifacts import sha256_file
from cnnkit.build.data import Dataset, Split, split_validation
from cnnkit.build.progress import Progress
from cnnkit.build.steps import epoch_data, epoch_seed, evaluate, make_step, measure_step_rate, normalisation
from cnnkit.errors import CheckpointError, DataError, TrainingError


@dataclass(frozen=True)
class TrainConfig:
    # the default recipe: chosen on the validation split (benchmarks/recipe.py, docs/TRAINING.md)
    epochs: int = 20
    batch_size: int = 64  # the global batch: split across processes under torchrun
    lr: float = 2e-3  # peak of the one-cycle schedule; the same for any number of processes (global batch fixed)
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_steps: int | None = None  # cap for smoke runs
    shift: int = 2  # random translation augmentation, in pixels (0 turns it off)
    rotate: float = 10.0  # random rotation augmentation, degrees each way (0 turns it off)
    val_fraction: float = 0.1  # of the training images, held out to validate on
    label_smoothing: float = 0.1
    eval_batch_size: int = 1000

    def recipe(self, precision: str) -> dict:
        """What makes two runs the same run (resume refuses a difference), with the precision actually used."""
        d = asdict(self)
        return {**{k: d[k] for k in resume.RECIPE_FIELDS}, "precision": precision}


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    test_loss: float
    test_accuracy: float
    seconds: float
    images_per_s: float


@dataclass(frozen=True)
class TrainResult:
    out_dir: str
    checkpoint: str | None
    device: str
    precision: str
    precision_reason: str
    dataset: dict
    epochs: list[EpochMetrics] = field(default_factory=list)
    elapsed_s: float = 0.0
    train_seconds: float = 0.0
    images_per_s: float = 0.0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    world_size: int = 1
    rank: int = 0
    resumed_from_epoch: int | None = None
    val_size: int = 0
    curves: str | None = None

    @property
    def test_accuracy(self) -> float | None:
        return self.epochs[-1].test_accuracy if self.epochs else None

    @property
    def val_accuracy(self) -> float | None:
        return self.epochs[-1].val_accuracy if self.epochs else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["test_accuracy"] = self.test_accuracy
        d["val_accuracy"] = self.val_accuracy
        return d


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first step: what the loop and each epoch's save work from."""

    dataset: Dataset
    cfg: TrainConfig
    out_dir: Path
    world: distributed.World
    device: Any  # torch.device
    precision: str
    precision_reason: str
    split: Split
    mean: float
    std: float
    config: Any  # ModelConfig
    recipe: dict
    resumed: tuple[resume.TrainState, dict, Any] | None  # saved state, optimizer tensors, checkpoint
    t_start: float


def default_out_dir(root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stamp
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def run_files() -> tuple[str, ...]:
    """What cnnkit writes into a run folder (train and export): `--force` clears these and nothing else."""
    from cnnkit.build import checkpoint
    from cnnkit.build.artifacts import FILENAMES

    return (
        checkpoint.WEIGHTS_NAME,
        checkpoint.META_NAME,
        "metrics.jsonl",
        resume.STATE_JSON,
        resume.STATE_TENSORS,
        curves.CURVES_NAME,
        *FILENAMES.values(),
    )


def check_out_dir(out_dir: Path, force: bool) -> bool:
    """Whether `out_dir` holds something; CheckpointError if that is an earlier run's and not `force`d away."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir}: exists and is not a folder")
    used = out_dir.is_dir() and any(out_dir.iterdir())
    if used and not force:
        raise CheckpointError(
            f"{out_dir}: not empty (an earlier run?); pass --resume {out_dir} to continue it, --force to "
            "replace it, or another --out"
        )
    return used


def prepare_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse to train over an earlier run (its checkpoint would be lost) unless `force`, which removes cnnkit's
    files from the folder first, so no stale export is left beside the new checkpoint."""
    if check_out_dir(out_dir, force):
        for name in run_files():
            p = out_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)  # an unusable --out fails now, not after the first epoch


def _to_device(images, labels, device):
    import numpy as np

    from cnnkit.build.model import tensor_from

    x = tensor_from(images).unsqueeze(1)
    y = tensor_from(labels.astype(np.int64, copy=False))
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def train(
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool | Progress = True,
    resume_run: bool = False,
    force: bool = False,
) -> TrainResult:
    """Train the seed CNN on `dataset`; checkpoint after every epoch; Ctrl-C keeps the last completed epoch.

    Under torchrun (WORLD_SIZE > 1) this runs on every rank: DDP over NCCL (CUDA) or gloo (CPU), rank 0 writing.
    `resume_run` continues the run in `out_dir` from its last completed epoch (the same recipe and data, or
    CheckpointError); otherwise `out_dir` must be empty unless `force`.
    """
    import torch

    from cnnkit.build import checkpoint
    from cnnkit.build.device import choose_precision, resolve_torch_device
    from cnnkit.build.model import ModelConfig

    t_start = time.perf_counter()
    world = distributed.from_env()
    device = resolve_torch_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    out_dir = Path(out_dir)
    if world.is_main and not resume_run:
        check_out_dir(out_dir, force)  # refuse early; the folder itself is made once the inputs are checked
    if cfg.batch_size < world.size:
        raise DataError(f"--batch-size {cfg.batch_size} is smaller than the {world.size} processes it is split over")
    h, w = dataset.train_images.shape[1:]
    if h != w or h % 4:
        raise DataError(
            f"{dataset.source}: images are {h}x{w}; the model needs square images with a side divisible by 4"
        )
    config = ModelConfig(num_classes=len(dataset.classes), image_size=h)
    per_rank = max(1, cfg.batch_size // world.size)
    measure = functools.partial(measure_step_rate, config, device, per_rank)
    precision, precision_reason = choose_precision(cfg.precision, device, measure)
    split = split_validation(dataset, cfg.val_fraction)
    mean, std = normalisation(split.train_images)
    recipe = cfg.recipe(precision)

    saved = None
    if resume_run:
        saved, opt_state = resume.load(out_dir)
        ck = checkpoint.load(out_dir)
        problem = resume.mismatch(saved, recipe, dataset.fingerprint, config.to_dict())
        if problem:
            raise CheckpointError(f"cannot resume {out_dir}: {problem}")
        if ck.sha256 != saved.weights_sha256:
            raise CheckpointError(f"cannot resume {out_dir}: {checkpoint.WEIGHTS_NAME} is not from epoch {saved.epoch}")

    created = world.is_main and not resume_run and not out_dir.exists()
    if world.is_main and not resume_run:
        prepare_out_dir(out_dir, force)
    world = distributed.init(world, device.type)
    precision, precision_reason = distributed.from_rank0(world, (precision, precision_reason))
    plan = Plan(
        dataset=dataset,
        cfg=cfg,
        out_dir=out_dir,
        world=world,
        device=device,
        precision=precision,
        precision_reason=precision_reason,
        split=split,
        mean=mean,
        std=std,
        config=config,
        recipe=cfg.recipe(precision),
        resumed=(saved, opt_state, ck) if saved is not None else None,
        t_start=t_start,
    )
    try:
        return _loop(plan, progress)
    finally:
        distributed.shutdown(world)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that saved nothing leaves no empty folder


def _loop(plan: Plan, progress: bool | Progress) -> TrainResult:
    import torch

    cfg, world, device, precision = plan.cfg, plan.world, plan.device, plan.precision
    dataset, split, out_dir, norm = plan.dataset, plan.split, plan.out_dir, (plan.mean, plan.std)
    saved, opt_state, ck = plan.resumed if plan.resumed is not None else (None, None, None)

    from cnnkit.build import checkpoint
    from cnnkit.build.model import Net

    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # the initial weights: the same on every rank
    # channels_last suits cuDNN and oneDNN alike (measured ~1.25x training throughput on a CPU)
    model = Net(plan.config).to(device).to(memory_format=torch.channels_last)
    if ck is not None:
        model.load_state_dict(ck.state_dict)
    x_train, y_train = _to_device(split.train_images, split.train_labels, device)
    x_val, y_val = _to_device(split.val_images, split.val_labels, device)
    x_test, y_test = _to_device(dataset.test_images, dataset.test_labels, device)
    n = len(x_train)
    steps_per_epoch = distributed.steps_per_epoch(n, cfg.batch_size, world.size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    # fused AdamW: one kernel for the whole update on CUDA (the foreach default elsewhere)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cuda or None)
    if total_steps >= 10:
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.25
        )
    else:  # too few steps for a warm-up/anneal cycle (smoke runs)
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    history: list[dict] = []
    start_epoch, step = 0, 0
    if saved is not None and opt_state is not None:
        opt.load_state_dict(resume.optimizer_state_dict(saved, opt_state))
        sched.load_state_dict(saved.scheduler)
        start_epoch, step, history = saved.epoch, saved.step, list(saved.history)
    net: torch.nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    train_step = make_step(net, opt, precision, sched, cfg.label_smoothing)
    aug = augment.Augment(shift=cfg.shift, rotate=cfg.rotate)
    reporter = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    reporter.enabled = reporter.enabled and world.is_main
    reporter.line(
        f"{precision} ({plan.precision_reason}); {world.size} process(es), global batch {cfg.batch_size}"
        + (f"; resuming after epoch {start_epoch}" if saved is not None else "")
    )

    epochs = [EpochMetrics(**h) for h in history]
    ckpt_path: str | None = str(checkpoint.resolve(out_dir)) if saved is not None else None
    interrupted = False
    train_seconds, images_seen = 0.0, 0
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            if step >= total_steps:
                break
            net.train()
            t0 = time.perf_counter()
            torch.manual_seed(epoch_seed(cfg.seed, epoch, world.rank))  # dropout: keyed by epoch and rank
            x_epoch, y_epoch, sizes = epoch_data(x_train, y_train, cfg.seed, epoch, aug, cfg.batch_size, world, norm)
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.float64)
            seen = torch.zeros((), device=device, dtype=torch.float64)
            steps_now = min(steps_per_epoch, total_steps - step)
            reporter.start(f"epoch {epoch}/{cfg.epochs}", steps_now)
            offset = 0
            for i in range(steps_now):
                size = sizes[i]
                xb, yb = x_epoch[offset : offset + size], y_epoch[offset : offset + size]
                offset += size
                loss, out = train_step(xb, yb)
                step += 1
                seen += size
                loss_sum += loss * size
                correct += (out.argmax(1) == yb).sum()
                reporter.update(i + 1, functools.partial(_running, loss_sum, correct, seen, t0, world.size))
            distributed.all_sum(world, loss_sum, correct, seen)  # the epoch's figures over every rank
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            reporter.end()
            train_loss = loss_sum.item() / seen.item()
            if not math.isfinite(train_loss):
                kept = f"kept epoch {epoch - 1} in {out_dir}" if epoch > 1 else "nothing saved"
                raise TrainingError(
                    f"training diverged in epoch {epoch} (loss {train_loss}); lower --lr ({cfg.lr:g}); {kept}"
                )
            train_seconds += seconds
            images_seen += int(seen.item())
            if not world.is_main:
                continue
            val = (
                evaluate(model, x_val, y_val, norm[0], norm[1], cfg.eval_batch_size, precision) if len(y_val) else None
            )
            test_loss, test_acc = evaluate(model, x_test, y_test, norm[0], norm[1], cfg.eval_batch_size, precision)
            m = EpochMetrics(
                epoch,
                train_loss,
                correct.item() / seen.item(),
                val[0] if val else None,
                val[1] if val else None,
                test_loss,
                test_acc,
                seconds,
                seen.item() / seconds,
            )
            epochs.append(m)
            history.append(asdict(m))
            ckpt_path = _save_epoch(plan, model, opt, sched, m, step, history)
            reporter.line(
                f"epoch {epoch}/{cfg.epochs}: train loss {m.train_loss:.4f}, "
                + (f"val accuracy {m.val_accuracy:.4f}, " if m.val_accuracy is not None else "")
                + f"test accuracy {test_acc:.4f}, {m.images_per_s:,.0f} img/s, {seconds:.1f} s"
            )
    except KeyboardInterrupt:
        interrupted = True
        reporter.end()
    curves_path = curves.write(out_dir, history) if world.is_main else None

    return TrainResult(
        out_dir=str(out_dir),
        checkpoint=ckpt_path,
        device=str(device) if not cuda else f"cuda ({torch.cuda.get_device_name(device)})",
        precision=precision,
        precision_reason=plan.precision_reason,
        dataset=dataset.identity(),
        epochs=epochs,
        elapsed_s=time.perf_counter() - plan.t_start,
        train_seconds=train_seconds,
        images_per_s=images_seen / train_seconds if train_seconds else 0.0,
        interrupted=interrupted,
        world_size=world.size,
        rank=world.rank,
        resumed_from_epoch=saved.epoch if saved is not None else None,
        val_size=len(y_val),
        curves=str(curves_path) if curves_path else None,
    )


def _running(loss_sum, correct, seen, t0: float, world_size: int) -> dict[str, str]:
    """The progress figures of the epoch so far (reading them waits for the GPU: called a few times a second)."""
    n = seen.item()
    return {
        "loss": f"{loss_sum.item() / n:.4f}",
        "acc": f"{correct.item() / n:.4f}",
        "img/s": f"{n * world_size / max(time.perf_counter() - t0, 1e-9):,.0f}",
    }


def _save_epoch(plan: Plan, model, opt, sched, m: EpochMetrics, step: int, history: list[dict]) -> str:
    """Checkpoint, resume state and metrics of a completed epoch (rank 0)."""
    from cnnkit.build import checkpoint

    cfg, dataset, config, out_dir = plan.cfg, plan.dataset, plan.config, plan.out_dir
    meta = checkpoint.CheckpointMeta(
        config=config,
        mean=plan.mean,
        std=plan.std,
        classes=dataset.classes,
        dataset=dataset.identity(),
        metrics={
            "epoch": m.epoch,
            "test_accuracy": m.test_accuracy,
            "test_loss": m.test_loss,
            "val_accuracy": m.val_accuracy,
            "val_loss": m.val_loss,
            "val_size": len(plan.split.val_labels),
            "train_loss": m.train_loss,
            "train_accuracy": m.train_accuracy,
        },
        seed=cfg.seed,
        versions=checkpoint.versions(),
        train_args={**{k: v for k, v in asdict(cfg).items() if k != "eval_batch_size"}, **plan.recipe},
        world_size=plan.world.size,
        precision_reason=plan.precision_reason,
    )
    opt_sd = opt.state_dict()
    weights = checkpoint.save(out_dir, model.state_dict(), meta)
    state = resume.TrainState(
        epoch=m.epoch,
        step=step,
        recipe=plan.recipe,
        dataset_sha256=dataset.fingerprint,
        model=config.to_dict(),
        classes=list(dataset.classes),
        scheduler=sched.state_dict(),
        param_groups=resume.json_param_groups(opt_sd["param_groups"]),
        history=history,
        weights_sha256=sha256_file(weights),
        world_size=plan.world.size,
    )
    resume.save(out_dir, state, opt_sd["state"])
    atomic.write_text(out_dir / "metrics.jsonl", "".join(json.dumps(h, allow_nan=False) + "\n" for h in history))
    return str(weights)
