"""Where exported models and their references come from: the deployable wrapper, loaders, and the
checkpoint an artefact names. Below both export and verify, so neither imports the other to load a file."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from cnnkit import contract
from cnnkit.errors import CheckpointError, ModelFileError, first_line

FORMATS = ("onnx", "torchscript")
FILENAMES = {"onnx": "model.onnx", "torchscript": "model.ts"}


def deployable(ckpt, fold: bool = False):
    """The uint8-in/logits-out wrapper that is exported; `fold` merges fc1 and fc2 into one exact linear layer.

    Unfolded, it is the eager reference every export is verified against.
    """
    from cnnkit.build.checkpoint import build_model
    from cnnkit.build.model import Deployable, FoldedNet

    net = build_model(ckpt)
    return Deployable(FoldedNet(net) if fold else net, ckpt.meta.mean, ckpt.meta.std).eval()


def artefact_kind(path: Path) -> str:
    """'torchscript' for a zip archive (TorchScript's container), else 'onnx'."""
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    with open(path, "rb") as fh:
        return "torchscript" if fh.read(4) == b"PK\x03\x04" else "onnx"


def read_info(path: Path) -> contract.ModelInfo:
    """The cnnkit metadata of an ONNX or TorchScript artefact."""
    if artefact_kind(path) == "torchscript":
        return load_torchscript(path)[1]
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelFileError(f"{path}: not a valid ONNX file ({first_line(exc)})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if contract.KEY not in props:
        raise ModelFileError(f"{path}: not a cnnkit model (no '{contract.KEY}' metadata)")
    return contract.ModelInfo.from_json(props[contract.KEY], str(path))


def find_checkpoint(artefacts: list[Path]) -> Path:
    """The source checkpoint named in the artefacts' metadata, checked against its recorded SHA-256."""
    info = read_info(artefacts[0])
    if not info.checkpoint_path:
        raise CheckpointError(f"{artefacts[0]}: metadata names no source checkpoint; pass --checkpoint")
    path = Path(info.checkpoint_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: source checkpoint recorded in {artefacts[0].name} not found; pass --checkpoint")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if info.checkpoint_sha256 and digest != info.checkpoint_sha256:
        raise CheckpointError(
            f"{path}: checkpoint changed since export (SHA-256 {digest[:12]}... != recorded "
            f"{info.checkpoint_sha256[:12]}...); re-export or pass --checkpoint"
        )
    return path


def load_torchscript(path: str | os.PathLike, map_location=None):
    """Load a cnnkit TorchScript file; return (module, ModelInfo)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: TorchScript file not found")
    extra = {contract.TS_EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation warning
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(p), map_location=map_location, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError or ValueError with multi-line C++ messages
        raise ModelFileError(f"{p}: not a loadable TorchScript file ({first_line(exc)})") from None
    if not extra[contract.TS_EXTRA_FILE]:
        raise ModelFileError(f"{p}: TorchScript file carries no cnnkit metadata ({contract.TS_EXTRA_FILE})")
    return module.eval(), contract.ModelInfo.from_json(extra[contract.TS_EXTRA_FILE], str(p))
