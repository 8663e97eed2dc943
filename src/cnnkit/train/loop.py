"""The training loop as named steps: set up (model, optimizer, schedule, data on the device, resumed state), then
per epoch train, evaluate (rank 0) and save (rank 0). Ctrl-C ends it with the last completed epoch kept."""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cnnkit import atomic
from cnnkit.errors import CheckpointError, TrainingError
from cnnkit.spec import WEIGHTS_NAME, CheckpointMeta
from cnnkit.train import augment, checkpoint, curves, distributed, nets, optim, resume
from cnnkit.train.config import EpochMetrics, TrainResult, best_epoch, patience_ran_out
from cnnkit.train.data import to_device
from cnnkit.train.epoch import epoch_plan, epoch_seed, evaluate
from cnnkit.train.model import per_channel
from cnnkit.train.plan import TrainPlan
from cnnkit.train.progress import Progress
from cnnkit.train.rundir import METRICS_NAME
from cnnkit.train.stepper import Steps, ready_steps

EXPLODED = 10.0  # an epoch's loss beyond this many times a uniform guess's has diverged
JUDGED_AFTER = (3, 100)  # epochs, steps: a run this long that is still at chance on validation did not learn


def did_not_learn(history: list[dict[str, Any]], val_labels: Any, steps: int) -> str | None:
    """Why a finished run failed although its loss stayed finite: validation accuracy no better than always
    answering the most frequent class (within three standard errors), after a run long enough to judge."""
    if len(history) < JUDGED_AFTER[0] or steps < JUDGED_AFTER[1] or len(val_labels) == 0:
        return None
    accuracy = history[-1].get("val_accuracy")
    counts = np.bincount(np.asarray(val_labels))
    chance = float(counts.max() / counts.sum())
    margin = 3 * math.sqrt(chance * (1 - chance) / len(val_labels))
    if accuracy is None or accuracy > chance + margin:
        return None
    return (
        f"the model did not learn: validation accuracy {accuracy:.2%} after {len(history)} epochs is no better than "
        f"always answering the most frequent class ({chance:.2%}); lower --lr, or check that the labels fit the images"
    )


@dataclass(kw_only=True)
class Session:
    """What the loop works on: the model (and its DDP wrapper), the optimizer, the data on the device, the count."""

    model: torch.nn.Module
    net: torch.nn.Module  # `model`, or DDP around it
    opt: torch.optim.Optimizer
    sched: Any  # torch.optim.lr_scheduler.LRScheduler
    steps: Steps  # runs one optimisation step and keeps the epoch's running sums (train.stepper)
    steps_reason: str
    aug: augment.Augment
    data: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "train", "val", "test" -> (uint8 images, labels)
    steps_per_epoch: int
    total_steps: int
    start_epoch: int
    step: int
    history: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class EpochTrain:
    loss: float
    accuracy: float
    images: int
    seconds: float


def run(plan: TrainPlan, progress: bool | Progress) -> TrainResult:
    """Train from `plan`'s first (or resumed) epoch to its last; save after each."""
    s = setup(plan)
    cfg, world = plan.cfg, plan.world
    reporter = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    reporter.enabled = reporter.enabled and world.is_main
    reporter.line(
        f"{plan.precision} ({plan.precision_reason}); {world.size} process(es), global batch {cfg.batch_size}"
        + (f"; {plan.stream}" if plan.stream else "")
        + (f"; resuming after epoch {s.start_epoch}" if plan.resumed is not None else "")
    )
    if plan.device.type == "cuda":
        reporter.line(f"steps: {s.steps_reason}")
    ckpt_path = str(checkpoint.resolve(plan.out_dir)) if plan.resumed is not None else None
    interrupted, train_seconds, images_seen = False, 0.0, 0
    stopped = patience_ran_out(s.history, cfg.patience) if s.history else False  # a resumed run that had stopped
    try:
        for epoch in range(s.start_epoch + 1, cfg.n_epochs + 1):
            if s.step >= s.total_steps or stopped:
                break
            done = train_epoch(plan, s, epoch, reporter)
            train_seconds += done.seconds
            images_seen += done.images
            if world.is_main:
                m = evaluate_epoch(plan, s, epoch, done)
                s.history.append(asdict(m))  # the one record of the epochs (resume state, metrics.jsonl, result)
                ckpt_path = save_epoch(plan, s, m) or ckpt_path
                reporter.line(_epoch_line(m, cfg.n_epochs, best_epoch(s.history) == epoch))
                stopped = patience_ran_out(s.history, cfg.patience)
            stopped = distributed.from_rank0(world, stopped)  # every rank stops together
            if stopped and world.is_main:
                reporter.line(
                    f"early stop: no better validation accuracy for {cfg.patience} epochs; the checkpoint keeps "
                    f"epoch {best_epoch(s.history)}"
                )
    except KeyboardInterrupt:
        interrupted = True
        reporter.end()
    curves_path = curves.write(plan.out_dir, s.history) if world.is_main and plan.plot else None
    failure = None if interrupted else did_not_learn(s.history, plan.split.val_labels, s.step)
    device = plan.device
    return TrainResult(
        out_dir=str(plan.out_dir),
        checkpoint=ckpt_path,
        device=str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        precision=plan.precision,
        precision_reason=plan.precision_reason,
        dataset=plan.dataset.identity(),
        cuda_graph=s.steps.graph,
        steps_reason=s.steps_reason,
        epochs=[EpochMetrics(**h) for h in s.history],
        elapsed_s=time.perf_counter() - plan.t_start,
        train_seconds=train_seconds,
        images_per_s=images_seen / train_seconds if train_seconds else 0.0,
        interrupted=interrupted,
        world_size=world.size,
        process_group=distributed.backend(),
        rank=world.rank,
        resumed_from_epoch=plan.resumed.state.epoch if plan.resumed is not None else None,
        val_size=len(plan.split.val_labels),
        curves=str(curves_path) if curves_path else None,
        failure=failure,
        started_from=plan.fitted.to_dict() if plan.fitted is not None else None,
        best_epoch=best_epoch(s.history) or (s.history[-1]["epoch"] if s.history else None),
        stopped_early=stopped and bool(s.history) and s.history[-1]["epoch"] < cfg.n_epochs,
        tuning=plan.tuning or None,
    )


def _epoch_line(m: EpochMetrics, epochs: int, best: bool) -> str:
    return (
        f"epoch {m.epoch}/{epochs}: train loss {m.train_loss:.4f}, "
        + (f"val accuracy {m.val_accuracy:.4f}{' (best)' if best else ''}, " if m.val_accuracy is not None else "")
        + (f"test accuracy {m.test_accuracy:.4f}, " if m.test_accuracy is not None else "")
        + f"{m.images_per_s:,.0f} img/s, {m.seconds:.1f} s"
    )


def setup(plan: TrainPlan) -> Session:
    """The model (initial or resumed weights), optimizer and one-cycle schedule, the data on the device."""
    cfg, device, world = plan.cfg, plan.device, plan.world
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # the initial weights: the same on every rank
    # channels_last suits cuDNN and oneDNN alike (measured ~1.25x training throughput on a CPU)
    model = nets.build(plan.config)
    if plan.fitted is not None and cfg.weights is not None:  # fine-tuning: the tensors read and checked in plan.check
        from cnnkit.train.nets import weights

        weights.fit(model, plan.fitted.state, source=plan.fitted.source)
    model = model.to(device).to(memory_format=torch.channels_last)
    if plan.resumed is not None:
        try:
            model.load_state_dict(plan.resumed.weights)
        except RuntimeError as exc:
            raise CheckpointError(f"{resume.STATE_TENSORS}: the saved weights do not fit the model ({exc})") from None
    split, ds = plan.split, plan.dataset
    stream = bool(plan.stream)
    data = {
        "train": to_device(split.train_images, split.train_labels, device, stream),
        "val": to_device(split.val_images, split.val_labels, device, stream),
        "test": to_device(ds.test_images, ds.test_labels, device, stream),
    }
    steps_per_epoch = distributed.steps_per_epoch(len(split.train_labels), cfg.batch_size, world.size)
    total_steps = steps_per_epoch * cfg.n_epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    # fused AdamW: one kernel for the whole update on CUDA (the foreach default elsewhere)
    opt, sched = optim.make(model, cfg, plan, total_steps, fused=cuda)
    start_epoch, step, history = 0, 0, []
    if plan.resumed is not None:
        saved = plan.resumed.state
        resume.restore(opt, sched, model, saved, plan.resumed.optimizer)
        start_epoch, step, history = saved.epoch, saved.step, list(saved.history)
    net: torch.nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    steps, steps_reason = _steps(plan, net, opt, sched)
    return Session(
        model=model,
        net=net,
        opt=opt,
        sched=sched,
        steps=steps,
        steps_reason=steps_reason,
        aug=augment.Augment(shift=cfg.shift, rotate=cfg.rotate, flip=cfg.flip),
        data=data,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        start_epoch=start_epoch,
        step=step,
        history=history,
    )


def _steps(plan: TrainPlan, net: torch.nn.Module, opt: Any, sched: Any) -> tuple[Steps, str]:
    c, h = plan.config.in_channels, plan.config.image_size
    kwargs = dict(net=net, opt=opt, sched=sched, precision=plan.precision, device=plan.device,
                  label_smoothing=plan.cfg.label_smoothing)  # fmt: skip
    return ready_steps(plan.cuda_graph, plan.cfg.cuda_graph, plan.steps_reason, (plan.cfg.batch_size, c, h, h), kwargs)


def train_epoch(plan: TrainPlan, s: Session, epoch: int, reporter: Progress) -> EpochTrain:
    """One epoch's optimisation steps on this rank's share; the loss and accuracy summed over every rank."""
    cfg, world, device = plan.cfg, plan.world, plan.device
    s.net.train()
    t0 = time.perf_counter()
    torch.manual_seed(epoch_seed(cfg.seed, epoch, world.rank))  # dropout: keyed by epoch and rank
    x_train, y_train = s.data["train"]
    norm = per_channel(plan.mean, plan.std, device)
    data = epoch_plan(x_train, y_train, cfg.seed, epoch, s.aug, cfg.batch_size, world, norm)
    sizes = data.sizes
    s.steps.reset()
    steps_now = min(s.steps_per_epoch, s.total_steps - s.step)
    reporter.start(f"epoch {epoch}/{cfg.n_epochs}", steps_now)
    offset = 0
    for i in range(steps_now):
        size = sizes[i]
        s.steps(*data.batch(offset, size))
        offset += size
        s.step += 1
        reporter.update(i + 1, functools.partial(_running, s.steps, offset, t0, world.size))
    loss_sum, correct = s.steps.loss_sum.clone(), s.steps.correct.clone()
    seen = torch.tensor(float(offset), device=device, dtype=torch.float64)
    distributed.all_sum(world, loss_sum, correct, seen)  # the epoch's figures over every rank
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    reporter.end()
    train_loss = loss_sum.item() / seen.item()
    guess = math.log(plan.config.num_classes)  # the loss of a uniform guess
    if not math.isfinite(train_loss) or train_loss > EXPLODED * guess:
        kept = f"kept epoch {epoch - 1} in {plan.out_dir}" if epoch > 1 else "nothing saved"
        raise TrainingError(
            f"training diverged in epoch {epoch} (loss {train_loss:.4g}; a uniform guess scores {guess:.2f}); "
            f"lower --lr ({cfg.lr:g}); {kept}"
        )
    return EpochTrain(loss=train_loss, accuracy=correct.item() / seen.item(), images=int(seen.item()), seconds=seconds)


def evaluate_epoch(plan: TrainPlan, s: Session, epoch: int, done: EpochTrain) -> EpochMetrics:
    """Validation and test loss and accuracy after an epoch (rank 0)."""
    size, precision, norm = plan.cfg.eval_batch_size, plan.precision, per_channel(plan.mean, plan.std, plan.device)
    x_val, y_val = s.data["val"]
    val = evaluate(s.model, x_val, y_val, *norm, size, precision) if len(y_val) else None
    x_test, y_test = s.data["test"]
    test = evaluate(s.model, x_test, y_test, *norm, size, precision) if len(y_test) else None
    return EpochMetrics(
        epoch=epoch,
        train_loss=done.loss,
        train_accuracy=done.accuracy,
        val_loss=val[0] if val else None,
        val_accuracy=val[1] if val else None,
        test_loss=test[0] if test else None,
        test_accuracy=test[1] if test else None,
        seconds=done.seconds,
        images_per_s=done.images / done.seconds,
    )


def _running(steps: Steps, n: int, t0: float, world_size: int) -> dict[str, str]:
    """The progress figures of the epoch so far (reading them waits for the GPU: called a few times a second)."""
    return {
        "loss": f"{steps.loss_sum.item() / n:.4f}",
        "acc": f"{steps.correct.item() / n:.4f}",
        "img/s": f"{n * world_size / max(time.perf_counter() - t0, 1e-9):,.0f}",
    }


def save_epoch(plan: TrainPlan, s: Session, m: EpochMetrics) -> str | None:
    """Resume state and metrics of a completed epoch (rank 0), and the checkpoint when the epoch is the best on
    validation (or there is no validation); returns the weights' path when it wrote them."""
    dataset, out_dir = plan.dataset, plan.out_dir
    best = best_epoch(s.history) or m.epoch
    weights = None
    if best == m.epoch:
        weights = checkpoint.save(out_dir, s.model.state_dict(), _meta(plan, m))
    opt_sd = s.opt.state_dict()
    state = resume.TrainState(
        epoch=m.epoch,
        step=s.step,
        recipe=plan.recipe,
        dataset_sha256=dataset.fingerprint,
        model=plan.config.to_dict(),
        classes=list(dataset.classes),
        scheduler=s.sched.state_dict(),
        param_groups=resume.json_param_groups(opt_sd["param_groups"]),
        history=s.history,
        weights_sha256=atomic.sha256_file(out_dir / WEIGHTS_NAME),
        world_size=plan.world.size,
        best_epoch=best,
    )
    resume.save(out_dir, state, opt_sd["state"], s.model.state_dict())
    text = "".join(json.dumps(h, allow_nan=False) + "\n" for h in s.history)
    atomic.write_text(out_dir / METRICS_NAME, text)
    return str(weights) if weights else None


def _meta(plan: TrainPlan, m: EpochMetrics) -> CheckpointMeta:
    cfg, dataset = plan.cfg, plan.dataset
    return CheckpointMeta(
        config=plan.config,
        mean=plan.mean,
        std=plan.std,
        geometry=dataset.geometry,
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
        train_args={
            **{k: v for k, v in asdict(cfg).items() if k != "eval_batch_size"},
            **plan.recipe,
            **({"weights_fitted": plan.fitted.to_dict()} if plan.fitted is not None else {}),
        },
        world_size=plan.world.size,
        precision_reason=plan.precision_reason,
        tuning=plan.tuning,
    )
