"""What a bench run measures, from the paths a user gives: run folders (their checkpoint, model.onnx and model.ts,
which must belong together), checkpoints, ONNX and TorchScript files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.atomic import sha256_file
from cnnkit.contract import FILENAMES
from cnnkit.errors import CnnkitError, ModelFileError
from cnnkit.export.artefacts import artefact_kind, find_checkpoint, read_info
from cnnkit.runtime import Classifier
from cnnkit.spec import WEIGHTS_NAME


@dataclass(kw_only=True)
class Inputs:
    """What a bench run measures: a checkpoint (torch backends), ONNX files (one row set each), a TorchScript file."""

    checkpoint: Path | None = None
    onnx: list[Path] = field(default_factory=list)
    torchscript: Path | None = None
    folder_torchscript: Path | None = None  # found in a run folder: loaded only when trusted explicitly
    pt2: dict[str, Path] = field(default_factory=dict)  # "exported"/"aoti" -> a .pt2 file named on the command line

    def describe(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "onnx": [str(p) for p in self.onnx],
            "torchscript": str(self.torchscript) if self.torchscript else None,
            **{kind: str(path) for kind, path in self.pt2.items()},
        }


def resolve_inputs(paths: list[str], need_checkpoint: bool, trust_folder_torchscript: bool = False) -> Inputs:
    """Run folders and files -> the checkpoint, every ONNX file given (a folder adds its model.onnx), TorchScript.

    A TorchScript file runs code when loaded: one found in a folder is used only with `trust_folder_torchscript`
    (else the caller exports one from the checkpoint, which holds no code)."""
    found = Inputs()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            _add_folder(found, p)
        elif not p.is_file():
            raise ModelFileError(f"{p}: not found")
        elif p.suffix == ".safetensors":
            found.checkpoint = p
        elif (kind := artefact_kind(p)) == "torchscript":
            found.torchscript = p
        elif kind in ("exported", "aoti"):
            found.pt2[kind] = p  # named, so trusted (an AOTInductor package loads native code)
        else:
            found.onnx.append(p)
    if trust_folder_torchscript and found.torchscript is None:
        found.torchscript = found.folder_torchscript
    if found.checkpoint is None and not found.onnx and found.torchscript is None and not found.pt2:
        raise ModelFileError(f"no checkpoint or exported model in {', '.join(paths)}; pass a run folder")
    if need_checkpoint and found.checkpoint is None:
        artefacts = found.onnx[:1] + ([found.torchscript] if found.torchscript else []) + list(found.pt2.values())[:1]
        found.checkpoint = find_checkpoint(artefacts)
    return found


def _add_folder(found: Inputs, folder: Path) -> None:
    """A run folder's checkpoint, model.onnx and model.ts, which must belong together."""
    ckpt = folder / WEIGHTS_NAME
    ckpt_sha = sha256_file(ckpt) if ckpt.is_file() else None
    if ckpt_sha and found.checkpoint is None:
        found.checkpoint = ckpt
    for kind in ("onnx", "torchscript"):
        f = folder / FILENAMES[kind]
        if not f.is_file():
            continue
        try:
            made_from = read_info(f).checkpoint_sha256
        except CnnkitError:  # unreadable: left to its backend, which reports it as a failed row
            made_from = ckpt_sha
        if ckpt_sha and made_from != ckpt_sha:  # a folder's files are compared only if they belong together
            raise ModelFileError(
                f"{f}: was not exported from {ckpt} (checkpoint SHA-256 {str(made_from)[:12]}... != "
                f"{ckpt_sha[:12]}...); re-export, or name the files to bench"
            )
        if kind == "onnx":
            found.onnx.append(f)
        elif found.folder_torchscript is None:
            found.folder_torchscript = f


def file_tags(files: list[Path]) -> list[str | None]:
    """What tells ONNX files apart in row names (`options.row_name`): nothing for one; '<variant>' (int8-folded,
    ...) or '<variant>:<file>' for several."""
    if len(files) == 1:
        return [None]
    variants = []
    for f in files:
        try:
            variants.append(Classifier(f, device="cpu", engine="onnxruntime", trust_int8=True).info.variant)
        except CnnkitError:
            variants.append(f.name)
    if len(set(variants)) < len(variants):
        variants = [f"{v}:{f}" for v, f in zip(variants, files)]
    return list(variants)
