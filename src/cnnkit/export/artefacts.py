"""Where exported models and their references come from: the deployable wrapper, loaders, and the
checkpoint an artefact names. Below both export and verify, so neither imports the other to load a file."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from cnnkit import atomic, contract
from cnnkit.atomic import sha256_file
from cnnkit.contract import read_manifest
from cnnkit.errors import CheckpointError, ModelFileError, first_line
from cnnkit.runtime import gates

MAX_CHECKPOINT_BYTES = 4 << 30


def record_exports(
    out_dir: Path,
    files: dict[str, Path],
    checkpoint_sha256: str,
    model_version: str,
    gated_on: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """Add the exported files to out_dir/exports.json: what export wrote, with SHA-256 and model version, and for
    an INT8 file the CPUs its accuracy gate passed on (`runtime.gates`; `gated_on`: format -> records). A record
    for people and tools; never a reason to load a file, only, for INT8, one not to trust it elsewhere."""
    entries = read_manifest(out_dir)
    for fmt, f in files.items():
        entries[f.name] = {
            "sha256": sha256_file(f),
            "checkpoint_sha256": checkpoint_sha256,
            "model_version": model_version,
        }
        if gated_on and gated_on.get(fmt):
            entries[f.name][gates.KEY] = gated_on[fmt]
    _write_manifest(out_dir, entries)


def _write_manifest(out_dir: Path, entries: dict[str, Any]) -> None:
    doc = {"format": "cnnkit-exports/1", "files": entries}
    atomic.write_text(out_dir / contract.MANIFEST, json.dumps(doc, indent=2) + "\n")


def gate_record(engine: str, agreement: float, accuracy_change: float) -> dict[str, Any]:
    """One passing INT8 gate on this CPU in `engine`, as exports.json records it."""
    return {**gates.here(engine), "agreement": round(agreement, 6), "accuracy_change": round(accuracy_change, 4)}


def record_gate(path: Path, record: dict[str, Any]) -> bool:
    """Add a passing gate to the exports.json entry of the file at `path` (one per CPU model, flags and engine: a
    newer one replaces an older); False where the folder records no entry for these bytes."""
    entries = read_manifest(path.parent)
    entry = entries.get(path.name)
    if not isinstance(entry, dict) or not path.is_file() or entry.get("sha256") != sha256_file(path):
        return False
    same = ("cpu", "cpu_flags", "engine")
    kept = [g for g in entry.get(gates.KEY) or [] if isinstance(g, dict) and any(g.get(k) != record[k] for k in same)]
    entry[gates.KEY] = [*kept, record]
    _write_manifest(path.parent, entries)
    return True


def artefact_kind(path: Path) -> str:
    """'exported' or 'aoti' for a .pt2 archive, 'torchscript' for another zip archive (TorchScript's container),
    else 'onnx'."""
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip and path.suffix == ".pt2":
        from cnnkit.export import torch_formats

        return torch_formats.kind_of(path)
    return "torchscript" if is_zip else "onnx"


def torchscript_metadata(path: Path) -> contract.ModelInfo:
    """The cnnkit metadata of a TorchScript file, read from its zip archive without loading (running) it."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/extra/" + contract.TS_EXTRA_FILE)]
            if not names:
                raise ModelFileError(f"{path}: TorchScript file carries no cnnkit metadata ({contract.TS_EXTRA_FILE})")
            info = z.getinfo(names[0])
            if info.file_size > 1 << 20:
                raise ModelFileError(f"{path}: cnnkit metadata of {info.file_size:,} bytes is implausibly large")
            text = z.read(names[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable TorchScript archive ({first_line(exc)})") from None
    return contract.ModelInfo.from_json(text, str(path))


def read_info(path: Path) -> contract.ModelInfo:
    """The cnnkit metadata of an ONNX or TorchScript artefact (never runs a TorchScript file's code)."""
    kind = artefact_kind(path)
    if kind == "torchscript":
        return torchscript_metadata(path)
    if kind in ("exported", "aoti"):
        from cnnkit.export import torch_formats

        return torch_formats.metadata(path)[0]
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
    """The source checkpoint an artefact's metadata names, resolved relative to the artefact's folder (an absolute
    path recorded by an older export counts by its file name only) and used only when its SHA-256 matches."""
    artefact = artefacts[0]
    info = read_info(artefact)
    if not info.checkpoint_path or not info.checkpoint_sha256:
        raise CheckpointError(f"{artefact}: metadata names no source checkpoint and SHA-256; pass --checkpoint")
    recorded = PurePosixPath(info.checkpoint_path.replace("\\", "/"))
    relative = PurePosixPath(recorded.name) if recorded.is_absolute() else PurePosixPath(os.path.normpath(recorded))
    if relative.suffix != ".safetensors" or relative.name != recorded.name:
        # not a path cnnkit writes: followed nowhere, and nothing said about what is there
        raise CheckpointError(
            f"{artefact}: the checkpoint path in its metadata is not one cnnkit export writes (a relative path to a "
            ".safetensors file); pass --checkpoint"
        )
    path = Path(os.path.normpath(artefact.parent / relative))
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the source checkpoint recorded in {artefact.name} is not there; pass --checkpoint"
        )
    if path.stat().st_size > MAX_CHECKPOINT_BYTES or sha256_file(path) != info.checkpoint_sha256:
        raise CheckpointError(
            f"{path}: not the checkpoint {artefact.name} was exported from (SHA-256 differs from the recorded "
            f"{info.checkpoint_sha256[:12]}...); re-export or pass --checkpoint"
        )
    return path


def load_torchscript(path: str | os.PathLike, map_location=None):
    """Load a cnnkit TorchScript file; return (module, ModelInfo).

    Loading TorchScript runs code stored in the file: callers load only files the user named (or explicitly
    trusted), never one they found in a folder. A record beside a file (exports.json) proves nothing against
    someone who can write both.
    """
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
