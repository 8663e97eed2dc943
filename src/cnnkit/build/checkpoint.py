"""Checkpoints: safetensors weights (no pickled code) with the full config embedded, plus a JSON twin.

A run folder holds `model.safetensors` and `checkpoint.json`. The JSON is also stored inside the
safetensors header, so the weights file alone is enough to rebuild the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cnnkit import atomic
from cnnkit.build.data import check_classes
from cnnkit.build.model import ModelConfig
from cnnkit.errors import CheckpointError, DataError, first_line

WEIGHTS_NAME = "model.safetensors"
META_NAME = "checkpoint.json"
FORMAT = "cnnkit-checkpoint/1"


@dataclass(frozen=True)
class CheckpointMeta:
    """What travels with the weights: enough to rebuild, normalise, label and trace the model."""

    config: ModelConfig
    mean: float
    std: float
    classes: tuple[str, ...]
    dataset: dict
    metrics: dict = field(default_factory=dict)
    seed: int | None = None
    versions: dict = field(default_factory=dict)
    train_args: dict = field(default_factory=dict)
    world_size: int = 1  # processes that trained it (torchrun)
    precision_reason: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        d["classes"] = list(self.classes)
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> CheckpointMeta:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CheckpointError(f"{where}: not a cnnkit checkpoint (format {got!r}, expected {FORMAT!r})")
        try:
            meta = cls(
                config=ModelConfig.from_dict(d["config"]),
                mean=float(d["mean"]),
                std=float(d["std"]),
                classes=tuple(d["classes"]),
                dataset=dict(d["dataset"]),
                metrics=dict(d.get("metrics") or {}),
                seed=d.get("seed"),
                versions=dict(d.get("versions") or {}),
                train_args=dict(d.get("train_args") or {}),
                world_size=int(d.get("world_size", 1)),
                precision_reason=str(d.get("precision_reason", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{where}: incomplete checkpoint metadata ({exc})") from None
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        if not (math.isfinite(meta.mean) and 0 <= meta.mean <= 1 and math.isfinite(meta.std) and 0 < meta.std <= 1):
            raise CheckpointError(f"{where}: normalisation mean {meta.mean}, std {meta.std} is not usable")
        if len(meta.classes) != meta.config.num_classes:
            raise CheckpointError(
                f"{where}: {len(meta.classes)} class names for a model with {meta.config.num_classes} outputs"
            )
        try:
            check_classes([str(c) if isinstance(c, str) else "" for c in meta.classes], where)
        except DataError as exc:
            raise CheckpointError(str(exc)) from None
        return meta


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # the weights file
    meta: CheckpointMeta
    sha256: str
    state_dict: dict


def resolve(path: str | os.PathLike) -> Path:
    """Accept a run folder or the weights file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_NAME
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def save(directory: str | os.PathLike, state_dict: dict, meta: CheckpointMeta) -> Path:
    """Write weights and metadata atomically into `directory`; return the weights path."""
    from safetensors.torch import save as st_save

    directory = Path(directory)
    meta_json = json.dumps(meta.to_dict(), indent=2, sort_keys=True, allow_nan=False)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    blob = st_save(tensors, metadata={"cnnkit": meta_json})
    weights = directory / WEIGHTS_NAME
    atomic.write_bytes(weights, blob)
    atomic.write_text(directory / META_NAME, meta_json + "\n")
    return weights


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint without unpickling anything; raise CheckpointError naming what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    p = resolve(path)
    raw = p.read_bytes()
    try:
        state = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p}: corrupt or not a safetensors file ({exc})") from None
    meta_json = ((header.get("__metadata__") if isinstance(header, dict) else None) or {}).get("cnnkit")
    if meta_json is None:
        raise CheckpointError(f"{p}: safetensors file carries no cnnkit metadata")
    try:
        parsed = json.loads(meta_json)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{p}: cnnkit metadata is not valid JSON ({str(exc)[:80]})") from None
    meta = CheckpointMeta.from_dict(parsed, str(p))
    return Checkpoint(p, meta, hashlib.sha256(raw).hexdigest(), state)


def build_model(ckpt: Checkpoint):
    """Rebuild the eval-mode Net from a checkpoint, checking that the weights fit the config."""
    from cnnkit.build.model import Net

    net = Net(ckpt.meta.config)
    try:
        net.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not match the model config ({first_line(exc)})") from None
    return net.eval()


def versions() -> dict:
    import platform

    import torch

    import cnnkit

    return {"cnnkit": cnnkit.__version__, "torch": torch.__version__, "python": platform.python_version()}
