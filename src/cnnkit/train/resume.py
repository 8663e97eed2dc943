"""Exact resume: the optimizer and scheduler state of the last completed epoch, saved without pickle.

Beside the checkpoint (the best epoch on validation), a run folder holds `train_state.safetensors` (the last
epoch's weights and the optimizer's tensors) and
`train_state.json` (everything else: epoch, step, scheduler, optimizer hyper-parameters, the recipe, the data's
fingerprint, the metrics so far). Randomness needs no saved state: each epoch's permutation, augmentation and
dropout are seeded from (seed, epoch, rank), so epoch e draws the same numbers whether or not the run stopped
before it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnkit import atomic
from cnnkit.errors import CheckpointError
from cnnkit.spec import SEED_ARCH
from cnnkit.train import state_schema
from cnnkit.train.config import RECIPE_FIELDS
from cnnkit.train.state_schema import FORMAT, TrainState

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"

MODEL_PREFIX = "model."  # the last epoch's weights in STATE_TENSORS
__all__ = ["RECIPE_FIELDS", "STATE_JSON", "STATE_TENSORS", "TrainState", "load", "mismatch", "save"]


def save(directory: Path, state: TrainState, optimizer_state: dict, model_state: dict) -> None:
    """Write both files atomically (tensors first: the JSON names the epoch they belong to)."""
    from safetensors.torch import save as st_save

    tensors = {
        f"{index}.{key}": value.detach().to("cpu").contiguous()
        for index, per_param in optimizer_state.items()
        for key, value in per_param.items()
    }
    tensors.update({MODEL_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in model_state.items()})
    atomic.write_bytes(directory / STATE_TENSORS, st_save(tensors, metadata={"epoch": str(state.epoch)}))
    body = {"format": FORMAT, **state.__dict__}
    atomic.write_text(directory / STATE_JSON, json.dumps(body, indent=2, allow_nan=False) + "\n")


def load(directory: Path) -> tuple[TrainState, dict, dict]:
    """The saved state, the optimizer's `state` dict ({param index: {name: tensor}}) and the last epoch's model
    weights; CheckpointError if absent or inconsistent."""
    from safetensors import SafetensorError, safe_open

    path = directory / STATE_JSON
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {STATE_JSON} to resume from (was it trained by this cnnkit version?)")
    try:
        body = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt training state ({str(exc)[:80]})") from None
    state = parse_state(body, str(path))
    opt_state: dict = {}
    model_state: dict = {}
    try:
        with safe_open(str(directory / STATE_TENSORS), framework="pt") as f:
            if (f.metadata() or {}).get("epoch") != str(state.epoch):
                raise CheckpointError(f"{directory / STATE_TENSORS}: not from epoch {state.epoch} ({STATE_JSON})")
            for name in f.keys():
                if name.startswith(MODEL_PREFIX):
                    model_state[name[len(MODEL_PREFIX) :]] = f.get_tensor(name)
                    continue
                index, key = name.split(".", 1)
                if not (index.isascii() and index.isdigit() and len(index) < 6):
                    raise ValueError(f"tensor name {name[:40]!r} is not <parameter index>.<state>")
                opt_state.setdefault(int(index), {})[key] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory / STATE_TENSORS}: cannot read ({exc})") from None
    if not model_state:
        raise CheckpointError(f"{directory / STATE_TENSORS}: holds no model weights")
    return state, opt_state, model_state


def parse_state(body: Any, where: str) -> TrainState:
    """train_state.json checked field by field against its schema and bounds; CheckpointError naming the field."""
    try:
        return state_schema.parse(body)
    except state_schema.SchemaError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


ADAMW_STATE = {"step", "exp_avg", "exp_avg_sq"}


def restore(opt: Any, sched: Any, model: Any, saved: TrainState, opt_state: dict[int, dict[str, Any]]) -> None:
    """Load the saved optimizer and scheduler state into fresh ones, after checking every tensor against the
    parameter it belongs to; CheckpointError naming what does not fit."""
    params = list(model.parameters())
    if sorted(opt_state) != list(range(len(params))):
        raise CheckpointError(
            f"{STATE_TENSORS}: optimizer state for {len(opt_state)} tensors, the model has {len(params)}"
        )
    for i, p in enumerate(params):
        state = opt_state[i]
        if set(state) != ADAMW_STATE:
            raise CheckpointError(
                f"{STATE_TENSORS}: parameter {i} has state {sorted(state)}, expected {sorted(ADAMW_STATE)}"
            )
        for key in ("exp_avg", "exp_avg_sq"):
            if tuple(state[key].shape) != tuple(p.shape) or state[key].dtype != p.dtype:
                raise CheckpointError(
                    f"{STATE_TENSORS}: {i}.{key} is {state[key].dtype} {list(state[key].shape)}, the parameter is "
                    f"{p.dtype} {list(p.shape)}"
                )
        if state["step"].numel() != 1 or float(state["step"]) != saved.step:
            raise CheckpointError(f"{STATE_TENSORS}: {i}.step is not the run's step {saved.step}")
    problem = _unlike(sched.state_dict(), saved.scheduler, "scheduler")
    if problem:
        raise CheckpointError(f"{STATE_JSON}: {problem}")
    try:
        opt.load_state_dict(optimizer_state_dict(saved, opt_state))
        sched.load_state_dict(saved.scheduler)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"{STATE_JSON}: the optimizer or scheduler state does not load ({str(exc)[:100]})"
        ) from None


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _unlike(fresh: Any, saved: Any, where: str) -> str | None:
    """Where `saved` differs in shape or type from what a fresh object of the same recipe holds (a number where a
    number belongs, the same keys, lists of the same length), or None."""
    if _kind(fresh) != _kind(saved):
        return f"{where} is {_kind(saved)}, expected {_kind(fresh)}"
    if isinstance(fresh, dict):
        if set(fresh) != set(saved):
            extra, missing = sorted(map(str, set(saved) - set(fresh))), sorted(map(str, set(fresh) - set(saved)))
            return f"{where} has unknown keys {extra[:5]} / lacks keys {missing[:5]}"
        return next((p for k in fresh if (p := _unlike(fresh[k], saved[k], f"{where}.{k}"))), None)
    if isinstance(fresh, list):
        if len(fresh) != len(saved):
            return f"{where} has {len(saved)} items, expected {len(fresh)}"
        return next((p for i, (a, b) in enumerate(zip(fresh, saved)) if (p := _unlike(a, b, f"{where}[{i}]"))), None)
    return None


def optimizer_state_dict(state: TrainState, opt_state: dict) -> dict:
    """Rebuild what `optimizer.load_state_dict` takes (JSON turned the betas tuples into lists)."""
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else dict(g) for g in state.param_groups]
    return {"state": opt_state, "param_groups": groups}


def json_param_groups(param_groups: list[dict]) -> list[dict]:
    return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in param_groups]


def mismatch(saved: TrainState, recipe: dict, dataset_sha256: str, model: dict) -> str | None:
    """What differs between the saved run and the one asked for, as one phrase; None when they are the same run."""
    if saved.dataset_sha256 != dataset_sha256:
        return f"different data (fingerprint {dataset_sha256[:12]}... != the run's {saved.dataset_sha256[:12]}...)"
    recorded = {"arch": SEED_ARCH, **saved.model}  # runs saved before other networks trained the seed's
    if recorded != model:
        diff = sorted(k for k in set(recorded) | set(model) if recorded.get(k) != model.get(k))
        return "different model (" + ", ".join(f"{k} {model.get(k)} != {recorded.get(k)}" for k in diff) + ")"
    diff = sorted(k for k in set(saved.recipe) | set(recipe) if saved.recipe.get(k) != recipe.get(k))
    if diff:
        return "different recipe (" + ", ".join(f"{k} {recipe.get(k)} != {saved.recipe.get(k)}" for k in diff) + ")"
    return None


def settings_of_run(
    run: str | Path, given: dict[str, Any], explicit: set[str], data_dir: str | None
) -> tuple[dict[str, Any], Any]:
    """What continuing `run` trains with: its recorded recipe (each of `names` in `given`), and its dataset loaded
    again (`data_dir` where it now lives). A value in `explicit` (set by the user) that differs from the run's, or
    a dataset or class list given at all, is refused (CheckpointError naming the parameter)."""
    from cnnkit.data.datasets import load_recorded, with_classes
    from cnnkit.errors import option_error
    from cnnkit.train import checkpoint

    meta = checkpoint.load(run).meta
    recipe = {}
    for name, value in given.items():
        recorded = meta.train_args.get(name, value)
        # precision auto accepts whatever the run chose
        if name in explicit and value != recorded and not (name == "precision" and value == "auto"):
            raise option_error(CheckpointError, name, value, f"differs from the run's {recorded}; cannot resume {run}")
        recipe[name] = recorded
    for name in ("dataset", "classes"):
        if name in explicit:
            raise option_error(CheckpointError, name, "", f"is taken from the run being resumed ({run}); drop it")
    ds = load_recorded(meta.dataset, data_dir)
    if tuple(ds.classes) != tuple(meta.classes):
        ds = with_classes(ds, tuple(meta.classes))
    return recipe, ds
