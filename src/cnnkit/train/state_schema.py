"""The schema of train_state.json, with bounds: a tampered or truncated file is refused naming its field, before
any of it reaches the optimizer, the scheduler or the loop (a step of 10^18 would silently train nothing)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from cnnkit.errors import CheckpointError, CnnkitError
from cnnkit.spec import ModelConfig, class_names_problem
from cnnkit.train.config import RECIPE_FIELDS, EpochMetrics, TrainConfig, best_epoch

HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_STEPS = 10**10
FORMAT = "cnnkit-train-state/2"


@dataclass(frozen=True, kw_only=True)
class TrainState:
    epoch: int  # last completed epoch
    step: int  # optimizer steps taken
    recipe: dict  # the TrainConfig fields in RECIPE_FIELDS, plus the chosen precision
    dataset_sha256: str
    model: dict  # ModelConfig.to_dict()
    classes: list[str]
    scheduler: dict
    param_groups: list[dict]
    history: list[dict] = field(default_factory=list)  # EpochMetrics as dicts
    weights_sha256: str = ""  # of the checkpoint: the best epoch's weights
    world_size: int = 1
    best_epoch: int = 0  # the epoch the checkpoint holds


class SchemaError(ValueError):
    """What is wrong with one field."""


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SchemaError(f"{name} must be an integer in {low}..{high}, got {str(value)[:30]!r}")
    return value


def _number(value: Any, name: str, optional: bool = False) -> Any:
    if value is None and optional:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchemaError(f"{name} must be a finite number, got {str(value)[:30]!r}")
    return value


def _hex(value: Any, name: str) -> str:
    if not isinstance(value, str) or not HEX64.fullmatch(value):
        raise SchemaError(f"{name} must be a SHA-256 in hex, got {str(value)[:30]!r}")
    return value


def _recipe(value: Any) -> dict[str, Any]:
    expected = {*RECIPE_FIELDS, "precision"}
    if not isinstance(value, dict) or set(value) != expected:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise SchemaError(f"recipe must hold exactly {sorted(expected)}, got {str(got)[:120]}")
    if value["precision"] not in ("fp32", "bf16"):
        raise SchemaError(f"recipe precision must be fp32 or bf16, got {str(value['precision'])[:20]!r}")
    try:
        TrainConfig(**{k: value[k] for k in RECIPE_FIELDS})  # the same bounds as the command line
    except CnnkitError as exc:
        raise SchemaError(f"recipe {exc}") from None
    return value


def _history(value: Any, epoch: int) -> list[dict[str, Any]]:
    names = [f.name for f in fields(EpochMetrics)]
    if not isinstance(value, list) or len(value) != epoch:
        raise SchemaError(f"history must list one entry per completed epoch ({epoch})")
    for i, entry in enumerate(value, 1):
        if not isinstance(entry, dict) or sorted(entry) != sorted(names):
            raise SchemaError(f"history[{i - 1}] must hold exactly {names}")
        _int(entry["epoch"], f"history[{i - 1}].epoch", i, i)
        for name in names[1:]:
            _number(entry[name], f"history[{i - 1}].{name}", optional=name.startswith(("val_", "test_")))
    return value


def _scheduler(value: Any, step: int) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SchemaError("scheduler must be an object")
    if "last_epoch" in value and value["last_epoch"] != step:
        raise SchemaError(f"scheduler last_epoch {str(value['last_epoch'])[:20]} is not the step {step}")
    for key, v in value.items():
        items = v if isinstance(v, list) else [v]  # OneCycleLR keeps a list of phase objects
        leaves = [x for item in items for x in (item.values() if isinstance(item, dict) else [item])]
        if not all(x is None or isinstance(x, (bool, int, float, str)) for x in leaves) or len(leaves) > 64:
            raise SchemaError(f"scheduler {key[:30]!r} must hold numbers and strings (a short list of them at most)")
    return value


def _param_groups(value: Any) -> list[dict[str, Any]]:
    """One optimizer parameter group, or two (fine-tuning: the body, then the head), their indices in order."""
    if not isinstance(value, list) or len(value) not in (1, 2) or not all(isinstance(g, dict) for g in value):
        raise SchemaError("param_groups must be a list of one or two optimizer parameter groups")
    seen: list[int] = []
    for i, group in enumerate(value):
        params = group.get("params")
        if not isinstance(params, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise SchemaError(f"param_groups[{i}].params must be a list of parameter indices")
        seen += params
        for key in ("lr", "weight_decay", "eps"):
            _number(group.get(key), f"param_groups[{i}].{key}")
        betas = group.get("betas")
        if not isinstance(betas, list) or len(betas) != 2 or not all(0 <= _number(b, "betas") < 1 for b in betas):
            raise SchemaError(f"param_groups[{i}].betas must be two numbers in [0, 1)")
    if seen != list(range(len(seen))):
        raise SchemaError("param_groups must index the parameters 0, 1, 2, ... in order")
    return value


def parse(body: Any) -> TrainState:
    """The TrainState of a train_state.json document, or SchemaError naming the first field that is wrong."""
    names = {f.name for f in fields(TrainState)}
    if isinstance(body, dict) and body.get("format") == "cnnkit-train-state/1":
        raise SchemaError("written by an older cnnkit (format cnnkit-train-state/1); this version cannot resume it")
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise SchemaError(f"not a cnnkit training state (format is not {FORMAT})")
    unknown = sorted(set(body) - names - {"format"})
    missing = sorted(names - set(body))
    if unknown or missing:
        raise SchemaError(f"unknown fields {unknown[:5]} / missing fields {missing}")
    epoch = _int(body["epoch"], "epoch", 1, 10_000)
    step = _int(body["step"], "step", 1, MAX_STEPS)
    try:
        model = ModelConfig.from_dict(body["model"]).to_dict()
    except CheckpointError as exc:
        raise SchemaError(str(exc)) from None
    problem = class_names_problem(body["classes"])
    if problem or len(body["classes"]) != model["num_classes"]:
        raise SchemaError(f"classes: {problem or 'one name per model output'}")
    return TrainState(
        epoch=epoch,
        step=step,
        recipe=_recipe(body["recipe"]),
        dataset_sha256=_hex(body["dataset_sha256"], "dataset_sha256"),
        model=model,
        classes=list(body["classes"]),
        scheduler=_scheduler(body["scheduler"], step),
        param_groups=_param_groups(body["param_groups"]),
        history=_history(body["history"], epoch),
        weights_sha256=_hex(body["weights_sha256"], "weights_sha256"),
        world_size=_int(body["world_size"], "world_size", 1, 65_536),
        best_epoch=_best(body, epoch),
    )


def _best(body: dict[str, Any], epoch: int) -> int:
    """The checkpoint's epoch: in range, and the best of the history when it has validation scores."""
    best = _int(body["best_epoch"], "best_epoch", 1, epoch)
    expected = best_epoch(body["history"])
    if expected is not None and best != expected:
        raise SchemaError(f"best_epoch {best} is not the best epoch on validation in the history ({expected})")
    return best
