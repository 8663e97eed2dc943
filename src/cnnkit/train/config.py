"""What a training run is asked to do (`TrainConfig`) and what it reports (`EpochMetrics`, `TrainResult`).

Torch-free, so the CLI reads its defaults without importing torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.spec import DEVICES, TRAIN_PRECISIONS

# recipe fields that must match for a resume to continue the same run
RECIPE_FIELDS = (
    "epochs", "batch_size", "lr", "weight_decay", "seed", "shift", "rotate", "val_fraction", "label_smoothing",
    "max_steps",
)  # fmt: skip


# (low, high) of each numeric option, for the CLI and for a recipe read back from a run (resume): one place
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "epochs": (1, 10_000),
    "batch_size": (1, 65_536),
    "seed": (0, 2**63 - 1),
    "max_steps": (1, 100_000_000),
    "shift": (0, 8),
    "eval_batch_size": (1, 65_536),
}
FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (0, 10),  # open at 0
    "weight_decay": (0, 1),
    "rotate": (0, 45),
    "val_fraction": (0, 0.5),
    "label_smoothing": (0, 0.5),
}
BOUNDS: dict[str, tuple[float, float]] = {**INT_BOUNDS, **FLOAT_BOUNDS}
INTEGERS = tuple(INT_BOUNDS)


@dataclass(frozen=True, kw_only=True)
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

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in BOUNDS and not (f.name == "max_steps" and value is None):
                low, high = BOUNDS[f.name]
                integer = f.name in INTEGERS
                ok_type = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
                if (
                    not ok_type
                    or not math.isfinite(value)
                    or not low <= value <= high
                    or (f.name == "lr" and value <= 0)
                ):
                    kind = "an integer" if integer else "a number"
                    raise CnnkitError(f"{f.name} must be {kind} in {low:g}..{high:g}, got {str(value)[:30]!r}")
        if self.device not in DEVICES or self.precision not in TRAIN_PRECISIONS:
            raise CnnkitError(f"device {self.device!r} / precision {self.precision!r}: expected one of {DEVICES} / "
                              f"{TRAIN_PRECISIONS}")  # fmt: skip

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
    test_loss: float
    test_accuracy: float
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
    failure: str | None = None  # the run finished, but its result is no use (it did not learn): exit 1

    @property
    def test_accuracy(self) -> float | None:
        return self.epochs[-1].test_accuracy if self.epochs else None

    @property
    def val_accuracy(self) -> float | None:
        return self.epochs[-1].val_accuracy if self.epochs else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test_accuracy"] = self.test_accuracy
        d["val_accuracy"] = self.val_accuracy
        return d
