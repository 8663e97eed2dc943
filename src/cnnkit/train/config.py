"""What a training run is asked to do (`TrainConfig`) and what it reports (`EpochMetrics`, `TrainResult`).

Torch-free, so the CLI reads its defaults without importing torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.spec import CUDA_GRAPH, DEVICES, TRAIN_PRECISIONS

# recipe fields that must match for a resume to continue the same run
RECIPE_FIELDS = (
    "epochs", "batch_size", "lr", "weight_decay", "seed", "shift", "rotate", "val_fraction", "label_smoothing",
    "max_steps", "patience", "dropout", "flip",
)  # fmt: skip


# (low, high) of each numeric option, for the CLI and for a recipe read back from a run (resume): one place
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "epochs": (1, 10_000),
    "batch_size": (1, 65_536),
    "seed": (0, 2**63 - 1),
    "max_steps": (1, 100_000_000),
    "shift": (0, 8),
    "eval_batch_size": (1, 65_536),
    "patience": (0, 10_000),
}
FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (0, 10),  # open at 0
    "weight_decay": (0, 1),
    "rotate": (0, 45),
    "val_fraction": (0, 0.5),
    "label_smoothing": (0, 0.5),
    "dropout": (0, 0.9),
    "body_lr_scale": (0, 1),  # open at 0
}
BOUNDS: dict[str, tuple[float, float]] = {**INT_BOUNDS, **FLOAT_BOUNDS}
INTEGERS = tuple(INT_BOUNDS)
OPTIONAL = ("epochs", "max_steps")  # None: sized to the data / no cap

# the default epoch budget: at most DEFAULT_EPOCHS, and about EPOCH_IMAGES training images (10 epochs of a
# 54,000-image split: large data needs fewer passes, and a default run stays within minutes on a CPU)
DEFAULT_EPOCHS = 20
EPOCH_IMAGES = 540_000


def default_epochs(n_fit: int) -> int:
    """The default number of epochs for `n_fit` training images (the validation split excluded)."""
    return max(1, min(DEFAULT_EPOCHS, round(EPOCH_IMAGES / max(1, n_fit))))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # the default recipe: chosen on the validation split (benchmarks/recipe.py, docs/TRAINING.md)
    epochs: int | None = None  # None: default_epochs() of the data (TrainConfig.sized)
    batch_size: int = 64  # the global batch: split across processes under torchrun
    lr: float = 2e-3  # peak of the one-cycle schedule; the same for any number of processes (global batch fixed)
    weight_decay: float = 1e-4
    seed: int = 0
    arch: str = "seed"  # the network (train.nets): seed, a torchvision builder, or package.module:factory
    weights: str | None = None  # start from these weights (train.nets.weights: a file, or "torchvision"): fine-tune
    body_lr_scale: float = 0.1  # fine-tuning: the body's learning rate as a fraction of the head's (lr)
    device: str = "auto"
    precision: str = "auto"
    cuda_graph: str = "auto"  # capture the training step in a CUDA graph (auto: on CUDA, one process); train.stepper
    max_steps: int | None = None  # cap for smoke runs
    shift: int = 2  # random translation augmentation, in pixels (0 turns it off)
    rotate: float = 10.0  # random rotation augmentation, degrees each way (0 turns it off)
    flip: bool = False  # random left-right mirroring (for data whose classes are mirror-symmetric: not digits)
    val_fraction: float = 0.1  # of the training images, held out to validate on
    label_smoothing: float = 0.1
    dropout: float = 0.5  # before the fully connected layers (the identity at inference)
    eval_batch_size: int = 1000
    # early stopping: end the run after this many epochs without a better validation score (0: never); the
    # checkpoint always holds the best epoch
    patience: int = 5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in BOUNDS and not (f.name in OPTIONAL and value is None):
                low, high = BOUNDS[f.name]
                integer = f.name in INTEGERS
                ok_type = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
                if (
                    not ok_type
                    or not math.isfinite(value)
                    or not low <= value <= high
                    or (f.name in ("lr", "body_lr_scale") and value <= 0)
                ):
                    kind = "an integer" if integer else "a number"
                    raise CnnkitError(f"{f.name} must be {kind} in {low:g}..{high:g}, got {str(value)[:30]!r}")
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise CnnkitError(f"weights must be a file or 'torchvision', got {str(self.weights)[:30]!r}")
        if not isinstance(self.flip, bool):
            raise CnnkitError(f"flip must be true or false, got {str(self.flip)[:30]!r}")
        if self.cuda_graph not in CUDA_GRAPH:
            raise CnnkitError(f"cuda_graph {self.cuda_graph!r}: expected one of {CUDA_GRAPH}")
        if self.device not in DEVICES or self.precision not in TRAIN_PRECISIONS:
            raise CnnkitError(f"device {self.device!r} / precision {self.precision!r}: expected one of {DEVICES} / "
                              f"{TRAIN_PRECISIONS}")  # fmt: skip

    def sized(self, n_train: int) -> TrainConfig:
        """This config with its epochs fixed for `n_train` training images (the validation split comes out)."""
        if self.epochs is not None:
            return self
        n_fit = n_train - round(n_train * self.val_fraction)
        return replace(self, epochs=default_epochs(n_fit))

    @property
    def n_epochs(self) -> int:
        """The epochs of a sized config."""
        if self.epochs is None:
            raise RuntimeError("TrainConfig.sized() first: epochs is still None")
        return self.epochs

    def recipe(self, precision: str) -> dict[str, Any]:
        """What makes two runs the same run (resume refuses a difference), with the precision actually used."""
        d = asdict(self)
        return {**{k: d[k] for k in RECIPE_FIELDS}, "precision": precision}


@dataclass(frozen=True, kw_only=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    test_loss: float | None  # None only in a tuning trial, which is given no test split
    test_accuracy: float | None
    seconds: float
    images_per_s: float


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    out_dir: str
    checkpoint: str | None
    device: str
    precision: str
    precision_reason: str
    dataset: dict[str, Any]
    cuda_graph: bool = False  # the steps replayed a CUDA graph (train.stepper)
    steps_reason: str = ""  # why the steps ran as they did
    epochs: list[EpochMetrics] = field(default_factory=list)
    elapsed_s: float = 0.0
    train_seconds: float = 0.0
    images_per_s: float = 0.0
    interrupted: bool = False
    world_size: int = 1
    process_group: str | None = None  # the torch.distributed backend under torchrun (nccl, gloo)
    rank: int = 0
    resumed_from_epoch: int | None = None
    val_size: int = 0
    curves: str | None = None
    failure: str | None = None  # the run finished, but its result is no use (it did not learn): exit 1

    best_epoch: int | None = None  # the epoch the checkpoint holds (the best on validation)
    stopped_early: bool = False  # early stopping ended the run before its last epoch
    tuning: dict[str, Any] | None = None  # how `--recipe auto` chose the recipe (train.tune.Tuning)
    started_from: dict[str, Any] | None = None  # what `--weights` filled in (train.nets.weights.Fitted)

    @property
    def best(self) -> EpochMetrics | None:
        """The checkpoint's epoch: the best on validation, else the last."""
        chosen = [e for e in self.epochs if e.epoch == self.best_epoch]
        return chosen[0] if chosen else (self.epochs[-1] if self.epochs else None)

    @property
    def test_accuracy(self) -> float | None:
        return self.best.test_accuracy if self.best else None

    @property
    def val_accuracy(self) -> float | None:
        return self.best.val_accuracy if self.best else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test_accuracy"] = self.test_accuracy
        d["val_accuracy"] = self.val_accuracy
        return d


# validation accuracies this close count as equal (a 400-image split moves 0.25 points per image): among them the
# later epoch is kept, further into the one-cycle schedule's annealing, rather than one lucky image earlier
EQUAL_WITHIN = 0.0025


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch to keep: the latest whose validation accuracy is within EQUAL_WITHIN of the highest; None
    without validation. As epochs are added it only moves forward: to the newest epoch, or it stays."""
    scored = [h for h in history if h.get("val_accuracy") is not None]
    if not scored:
        return None
    top = max(h["val_accuracy"] for h in scored)
    return max(h["epoch"] for h in scored if h["val_accuracy"] >= top - EQUAL_WITHIN - 1e-12)


def patience_ran_out(history: list[dict[str, Any]], patience: int) -> bool:
    """Early stopping: `patience` epochs have passed since the kept one."""
    best = best_epoch(history)
    return patience > 0 and best is not None and history[-1]["epoch"] - best >= patience
