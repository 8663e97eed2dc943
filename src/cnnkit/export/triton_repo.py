"""`cnnkit export --format triton`: a Triton Inference Server model repository a stock server loads with no Python.

    REPO/<name>/config.pbtxt          platform onnxruntime_onnx, uint8 images [C,H,W] -> float32 logits [classes]
    REPO/<name>/labels.txt            class names, one per line (Triton's classification extension returns them)
    REPO/<name>/1/model.onnx          the verified ONNX export (metadata inside)
    REPO/<name>-libtorch/...          optionally the TorchScript export (platform pytorch_libtorch, model.pt)

The configuration is written as protobuf text format against Triton's ModelConfig schema (model_config.proto);
the tests parse it with tritonclient's own `model_config_pb2`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit import atomic, contract
from cnnkit.errors import CnnkitError
from cnnkit.export.artefacts import read_info
from cnnkit.export.exporter import export as run_export
from cnnkit.triton_config import LABELS, TritonOptions, model_config, to_pbtxt

if TYPE_CHECKING:
    from cnnkit.export.exporter import ExportOptions, ExportResult

MARKER = "# written by cnnkit export"  # the first line of every config.pbtxt cnnkit writes
# the PyTorch backend names outputs by position (TorchScript outputs have no names): <name>__<index>
LIBTORCH_OUTPUT = f"{contract.OUTPUT_NAME}__0"
__all__ = ["check_target", "config_pbtxt", "write_repository"]


def config_pbtxt(name: str, platform: str, info: contract.ModelInfo, opts: TritonOptions, output_name: str) -> str:
    """The model configuration in protobuf text format, from the one `triton_config.model_config`."""
    head = f"{MARKER} --format triton; model version {info.version}, {info.variant}\n"
    return head + to_pbtxt(model_config(name, platform, info, opts, output_name))


def _is_cnnkits(model_dir: Path) -> bool:
    config = model_dir / "config.pbtxt"
    try:
        return config.is_file() and config.read_text(errors="replace").startswith(MARKER)
    except OSError:
        return False


def check_target(repo: Path, name: str) -> None:
    """Refuse, before any work, a model folder in `repo` that cnnkit did not write."""
    target = repo / name
    if target.exists() and not _is_cnnkits(target):
        raise CnnkitError(
            f"{target}: exists and was not written by cnnkit export; choose another --model-name or --out "
            "(cnnkit never replaces or deletes what it did not write)"
        )


def _land(built: Path, target: Path) -> Path:
    """Move a staged model folder (config, labels, version 1) into the repository: whole where `target` is new,
    else as the next version of cnnkit's model there; returns the version folder."""
    if not target.exists():
        os.replace(built, target)
        return target / "1"
    check_target(target.parent, target.name)
    versions = [int(p.name) for p in target.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()]
    version_dir = target / str(max(versions, default=0) + 1)
    os.replace(built / "1", version_dir)
    for name in ("config.pbtxt", LABELS):  # describe the newest version (the one Triton serves)
        atomic.write_bytes(target / name, (built / name).read_bytes())
    return version_dir


def _model_dir(stage: Path, name: str, platform: str, artefact: Path, filename: str, info, opts, output: str) -> Path:
    d = stage / name
    (d / "1").mkdir(parents=True)
    os.replace(artefact, d / "1" / filename)
    (d / "config.pbtxt").write_text(config_pbtxt(name, platform, info, opts, output))
    (d / LABELS).write_text("".join(c + "\n" for c in info.classes))
    return d


def write_repository(
    checkpoint_path: str | os.PathLike[str], repo: str | os.PathLike[str], opts: TritonOptions, export: ExportOptions
) -> ExportResult:
    """Export (and verify) the checkpoint, then lay the files out as model folders in `repo`.

    A new model folder is built in a staging folder inside `repo`, then renamed into place. Where cnnkit already
    wrote that model, the export becomes its next version beside the others (Triton serves the latest); a folder
    cnnkit did not write is refused. No version folder is ever deleted. Returns the ExportResult, its artefacts
    pointing into the repository.
    """
    repo = Path(repo)
    if opts.model_name:  # refuse before the export's seconds of work where the name is known already
        for name in (opts.model_name, *([f"{opts.model_name}-libtorch"] if opts.torchscript else [])):
            check_target(repo, name)
    repo.mkdir(parents=True, exist_ok=True)
    formats = ("onnx", "torchscript") if opts.torchscript else ("onnx",)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=repo) as tmp:
        stage = Path(tmp)
        # the metadata records the checkpoint relative to where the files will live: REPO/<name>/1/
        options = replace(export, formats=formats)
        result = run_export(checkpoint_path, stage / "export", options, final_dir=repo / "m" / "1")
        if not result.ok:
            return replace(result, artefacts={})  # nothing landed: the staging folder goes
        onnx_file = Path(result.artefacts["onnx"])
        info = read_info(onnx_file)
        name = opts.model_name or info.serving_name
        built = {
            "onnx": _model_dir(stage, name, "onnxruntime_onnx", onnx_file, "model.onnx", info, opts, info.output_name)
        }
        if opts.torchscript:
            ts = Path(result.artefacts["torchscript"])
            built["torchscript"] = _model_dir(
                stage, f"{name}-libtorch", "pytorch_libtorch", ts, "model.pt", info, opts, LIBTORCH_OUTPUT
            )
        artefacts = {}
        for fmt, folder in built.items():
            version_dir = _land(folder, repo / folder.name)
            artefacts[fmt] = str(version_dir / ("model.onnx" if fmt == "onnx" else "model.pt"))
            artefacts[f"{fmt}-config"] = str(repo / folder.name / "config.pbtxt")
    return replace(result, artefacts=artefacts)
