"""Checkpoints: safetensors weights (no pickled code) with the full metadata (`spec.CheckpointMeta`) embedded, plus
a JSON twin; and the modules rebuilt from them.

A run folder holds `model.safetensors` and `checkpoint.json`. The JSON is also stored inside the
safetensors header, so the weights file alone is enough to rebuild the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit import __version__, atomic
from cnnkit.errors import CheckpointError, first_line
from cnnkit.spec import META_NAME, WEIGHTS_NAME, CheckpointMeta


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    path: Path  # the weights file
    meta: CheckpointMeta
    sha256: str
    state_dict: dict[str, Any]


EXPORTED = {".onnx": "ONNX", ".ts": "TorchScript", ".pt2": "torch.export", ".pt": "a torch file"}


def resolve(path: str | os.PathLike[str]) -> Path:
    """Accept a run folder or the weights file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_NAME
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.suffix != ".safetensors":
        kind = EXPORTED.get(p.suffix.lower())
        what = f"an exported model ({kind})" if kind else f"not a checkpoint (a {p.suffix or 'suffix-less'} file)"
        raise CheckpointError(f"{p}: {what}; expected a run folder or its {WEIGHTS_NAME}")
    return p


def save(directory: str | os.PathLike[str], state_dict: dict[str, Any], meta: CheckpointMeta) -> Path:
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


def load(path: str | os.PathLike[str]) -> Checkpoint:
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
    return Checkpoint(path=p, meta=meta, sha256=hashlib.sha256(raw).hexdigest(), state_dict=state)


def build_model(ckpt: Checkpoint) -> Any:
    """Rebuild the eval-mode Net from a checkpoint, checking that the weights fit the config."""
    from cnnkit.train import nets

    net = nets.build(ckpt.meta.config)
    try:
        net.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not match the model config ({first_line(exc)})") from None
    return net.eval()


def deployable(ckpt: Checkpoint, fold: bool = False) -> Any:
    """The uint8-in/logits-out wrapper that is exported; `fold` merges fc1 and fc2 into one exact linear layer.

    Unfolded, it is the eager reference every export is verified against.
    """
    from cnnkit.train.model import Deployable, FoldedNet

    net = build_model(ckpt)
    return Deployable(FoldedNet(net) if folds(ckpt, fold) else net, ckpt.meta.mean, ckpt.meta.std).eval()


def folds(ckpt: Checkpoint, fold: bool) -> bool:
    """Whether asking for the fold folds this checkpoint's network: the fold is the seed's (fc1 and fc2 with nothing
    between them); other networks export as they are."""
    from cnnkit.train import nets

    return fold and nets.foldable(ckpt.meta.config)


def versions() -> dict[str, str]:
    import platform

    import torch

    return {"cnnkit": __version__, "torch": torch.__version__, "python": platform.python_version()}
