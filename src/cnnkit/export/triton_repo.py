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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit import atomic, contract
from cnnkit.errors import CnnkitError
from cnnkit.export.artifacts import read_info
from cnnkit.export.exporter import export as run_export
from cnnkit.spec import TRITON_INSTANCE_KINDS

if TYPE_CHECKING:
    from cnnkit.export.exporter import ExportOptions, ExportResult

INSTANCE_KINDS = {kind: f"KIND_{kind.upper()}" for kind in TRITON_INSTANCE_KINDS}  # Triton's names
LABELS = "labels.txt"
MARKER = "# written by cnnkit export"  # the first line of every config.pbtxt cnnkit writes
# the PyTorch backend names outputs by position (TorchScript outputs have no names): <name>__<index>
LIBTORCH_OUTPUT = f"{contract.OUTPUT_NAME}__0"


@dataclass(frozen=True, kw_only=True)
class TritonOptions:
    model_name: str | None = None  # default: the model's serving name (contract.ModelInfo.serving_name)
    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (16, 64)
    max_queue_delay_us: int = 2000
    instance_kind: str = "auto"  # auto (GPU where Triton has one), gpu, cpu
    instances: int = 1
    torchscript: bool = False  # also a pytorch_libtorch model beside the ONNX one

    def __post_init__(self) -> None:
        if self.instance_kind not in INSTANCE_KINDS:
            raise CnnkitError(f"instance kind {self.instance_kind!r}; expected one of {', '.join(INSTANCE_KINDS)}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise CnnkitError(f"preferred batch sizes {bad} are not within 1..max batch size {self.max_batch_size}")
        if self.model_name is not None:
            contract.valid_model_name(self.model_name)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_pbtxt(name: str, platform: str, info: contract.ModelInfo, opts: TritonOptions, output_name: str) -> str:
    """The model configuration in protobuf text format."""
    dims_in = f"[ {info.channels}, {info.image_size}, {info.image_size} ]"
    preferred = ", ".join(str(b) for b in opts.preferred_batch_sizes)
    return f"""{MARKER} --format triton; model version {info.version}, {info.variant}
name: {_q(name)}
platform: {_q(platform)}
max_batch_size: {opts.max_batch_size}
input [
  {{
    name: {_q(info.input_name)}
    data_type: TYPE_UINT8
    format: FORMAT_NCHW
    dims: {dims_in}
  }}
]
output [
  {{
    name: {_q(output_name)}
    data_type: TYPE_FP32
    dims: [ {info.num_classes} ]
    label_filename: {_q(LABELS)}
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {opts.max_queue_delay_us}
}}
instance_group [
  {{
    count: {opts.instances}
    kind: {INSTANCE_KINDS[opts.instance_kind]}
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


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
            return result
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
