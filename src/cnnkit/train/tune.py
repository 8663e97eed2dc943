"""`--recipe auto`: the regularisation that fits the user's data, chosen on the validation split.

Each candidate recipe (CANDIDATES: how much augmentation, label smoothing and dropout) trains a short trial, a
complete one-cycle schedule of a quarter of the full run's epochs and of at most about TRIAL_IMAGES images (one
epoch on large data), on the training images less the validation split; the one with the best validation
accuracy then trains in full. The test split is never read to choose: the trials are handed the dataset without it.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from cnnkit.data.dataset import Dataset
from cnnkit.errors import CnnkitError
from cnnkit.train.config import TrainConfig

# the knobs a trial varies, and the candidates, from the most regularised to the least
TUNED = ("shift", "rotate", "flip", "label_smoothing", "dropout")
CANDIDATES: dict[str, dict[str, Any]] = {
    "default": {k: getattr(TrainConfig(), k) for k in TUNED},  # the fixed recipe (`--recipe default`)
    "shifts": {"shift": 2, "rotate": 0.0, "flip": False, "label_smoothing": 0.0, "dropout": 0.5},
    "mirror": {"shift": 0, "rotate": 0.0, "flip": True, "label_smoothing": 0.0, "dropout": 0.5},
    "none": {"shift": 0, "rotate": 0.0, "flip": False, "label_smoothing": 0.0, "dropout": 0.5},
}
TRIAL_FRACTION = 0.25  # of the full run's epochs, per trial
TRIAL_IMAGES = 30_000  # and about this many training images at most (but one epoch at least)


@dataclass(frozen=True, kw_only=True)
class Trial:
    name: str
    settings: dict[str, Any]
    epochs: int
    val_accuracy: float
    val_loss: float
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Tuning:
    chosen: str
    settings: dict[str, Any]
    trials: list[Trial]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidates(fixed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The candidates with the knobs the user set explicitly held at their values; duplicates dropped."""
    out: dict[str, dict[str, Any]] = {}
    for name, settings in CANDIDATES.items():
        merged = {**settings, **{k: v for k, v in fixed.items() if k in TUNED}}
        if merged not in out.values():
            out[name] = merged
    return out


def trial_epochs(epochs: int, n_fit: int) -> int:
    """A trial's epochs, for a full run of `epochs` over `n_fit` training images."""
    return max(1, min(math.ceil(epochs * TRIAL_FRACTION), round(TRIAL_IMAGES / max(1, n_fit))))


def why_not(cfg: TrainConfig, fixed: dict[str, Any], world_size: int) -> str | None:
    """Why `--recipe auto` cannot tune this run (it then trains the fixed default), or None."""
    if cfg.val_fraction == 0:
        return "no validation split (--val-fraction 0) to choose on"
    if cfg.max_steps is not None:
        return "a --max-steps smoke run"
    if world_size > 1:
        return f"tuning runs in one process, not under torchrun ({world_size} processes)"
    if len(candidates(fixed)) < 2:
        return "every tuned option was given explicitly"
    return None


def cost_line(dataset: Dataset, cfg: TrainConfig, n_candidates: int) -> str:
    """What a tuned run costs on this machine, said before it starts: the training rate measured on a few steps,
    times the trials' and the full run's images (evaluation not counted)."""
    from cnnkit.spec import ModelConfig
    from cnnkit.train.device import resolve_torch_device
    from cnnkit.train.stepper import choose_graph, measure_step_rate

    c, h = dataset.train_images.shape[1:3]
    config = ModelConfig(
        arch=cfg.arch, in_channels=c, num_classes=len(dataset.classes), image_size=h, dropout=cfg.dropout
    )
    precision = "bf16" if cfg.precision == "bf16" else "fp32"
    epochs, n_fit = _trial_budget(dataset, cfg)
    device = resolve_torch_device(cfg.device)
    graph, _ = choose_graph(cfg.cuda_graph, device, False, cfg.batch_size, n_fit)
    rate = measure_step_rate(config, device, cfg.batch_size, precision, graph)
    per_epoch = n_fit / rate
    trial = trial_epochs(epochs, n_fit)
    return (
        f"recipe auto: {n_candidates} trials of {trial} epoch{'s' * (trial > 1)}, then up to {epochs} epochs of "
        f"the winner: about {_minutes(n_candidates * trial * per_epoch)} + {_minutes(epochs * per_epoch)} at "
        f"{rate:,.0f} training images/s measured here (evaluation not counted)"
    )


def _trial_budget(dataset: Dataset, cfg: TrainConfig) -> tuple[int, int]:
    """The full run's epochs and its training images (the validation split out)."""
    n = len(dataset.train_labels)
    return cfg.sized(n).n_epochs, n - round(n * cfg.val_fraction)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def choose(
    dataset: Dataset,
    cfg: TrainConfig,
    fixed: dict[str, Any],
    report: Callable[[str], None] = lambda line: None,
) -> Tuning:
    """Train each candidate's trial and pick the best on validation accuracy (lower validation loss breaks a tie,
    then the earlier, more regularised candidate)."""
    from cnnkit.train.run import train

    t0 = time.perf_counter()
    epochs = trial_epochs(*_trial_budget(dataset, cfg))
    no_test = dataset.test_labels[:0]
    dataset = replace(dataset, test_images=dataset.test_images[:0], test_labels=no_test)  # out of reach
    trials = []
    for name, settings in candidates(fixed).items():
        trial_cfg = replace(cfg, **settings, epochs=epochs, patience=0, max_steps=None)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="cnnkit-trial-") as out:
            result = train(dataset, trial_cfg, out, progress=False, plot=False)
        last = result.epochs[-1] if result.epochs else None
        if result.interrupted or last is None or last.val_accuracy is None or last.val_loss is None:
            raise KeyboardInterrupt if result.interrupted else CnnkitError(f"trial {name!r} produced no validation")
        trial = Trial(
            name=name,
            settings=settings,
            epochs=epochs,
            val_accuracy=last.val_accuracy,
            val_loss=last.val_loss,
            seconds=time.perf_counter() - t1,
        )
        report(f"trial {name} ({describe(settings)}): val accuracy {trial.val_accuracy:.4f}, {trial.seconds:.0f} s")
        trials.append(trial)
    best = max(trials, key=lambda t: (t.val_accuracy, -t.val_loss, -trials.index(t)))
    return Tuning(chosen=best.name, settings=best.settings, trials=trials, seconds=time.perf_counter() - t0)


def describe(settings: dict[str, Any]) -> str:
    """`shift 2, rotate 10, flip off, label smoothing 0.1, dropout 0.5`."""
    ordered = sorted(settings.items(), key=lambda kv: TUNED.index(kv[0]) if kv[0] in TUNED else len(TUNED))
    return ", ".join(
        f"{k.replace('_', ' ')} {('on' if v else 'off') if isinstance(v, bool) else format(v, 'g')}" for k, v in ordered
    )


def recipe_for(
    dataset: Dataset,
    cfg: TrainConfig,
    explicit: dict[str, Any],
    check_out: Callable[[], object],
    say: Callable[[str], None],
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """`--recipe auto` as a policy: the recipe chosen on validation and how it was chosen (for the checkpoint), or
    the fixed recipe with the reason said. `explicit` holds the knobs the user set (held at their values);
    `check_out()` refuses an unusable output folder before the trials rather than after them; `say` reports."""
    from cnnkit.train import distributed

    reason = why_not(cfg, explicit, distributed.from_env().size)
    if reason:
        say(f"recipe auto: {reason}; training the default recipe")
        return cfg, None
    check_out()
    say(cost_line(dataset, cfg, len(candidates(explicit))))
    chosen = choose(dataset, cfg, explicit, report=say)
    say(f"recipe auto: chose {chosen.chosen!r} on validation in {chosen.seconds:.0f} s; training it in full")
    return replace(cfg, **chosen.settings), chosen.to_dict()
