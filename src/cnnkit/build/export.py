"""Export a checkpoint to ONNX (dynamo exporter) and TorchScript, metadata inside, parity-checked."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit import atomic, contract
from cnnkit.build.artifacts import FILENAMES, FORMATS, deployable
from cnnkit.errors import CnnkitError, first_line

if TYPE_CHECKING:
    from cnnkit.build.verify import ParityReport

__all__ = ["FILENAMES", "FORMATS", "ExportResult", "export", "example_input", "to_onnx", "to_torchscript"]


@dataclass(frozen=True)
class ExportResult:
    checkpoint: str
    checkpoint_sha256: str
    artefacts: dict[str, str]  # format -> path; empty when parity failed
    seconds: float
    parity: ParityReport | None = None  # when verified
    opset: int | None = None

    @property
    def ok(self) -> bool:
        return self.parity is None or bool(self.parity)

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "artefacts": self.artefacts,
            "seconds": self.seconds,
            "opset": self.opset,
            "ok": self.ok,
            "parity": self.parity.to_dict() if self.parity is not None else None,
        }


@contextlib.contextmanager
def quiet(sink: io.StringIO | None = None):
    """Keep exporter chatter (prints, deprecation and tracer warnings) out of cnnkit's output."""
    sink = sink if sink is not None else io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield sink


def example_input(ckpt: Any) -> Any:
    """A uint8 batch of two images of the checkpoint's input shape (the exporter's example)."""
    import torch

    c = ckpt.meta.config
    return torch.zeros(2, c.in_channels, c.image_size, c.image_size, dtype=torch.uint8)


def to_onnx(module, example, meta: dict, path: Path, opset: int | None = None) -> int:
    """Export `module` to ONNX at `path` with a dynamic batch axis; check it; return the opset used."""
    import onnx
    import torch

    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    log = io.StringIO()
    try:
        with quiet(log):
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[contract.INPUT_NAME],
                output_names=[contract.OUTPUT_NAME],
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1 << 20)}},
                dynamo=True,
                verbose=False,
                **kwargs,
            )
            if program is None:
                raise CnnkitError("the ONNX exporter returned no program")
            proto = program.model_proto
    except Exception as exc:  # exporter errors are many and deep; surface one line plus the log tail
        tail = log.getvalue().strip().splitlines()[-1:]
        raise CnnkitError(f"ONNX export failed: {first_line(exc)} {' '.join(tail)}".strip()) from None
    entries = {contract.KEY: json.dumps(meta, sort_keys=True)}
    del proto.metadata_props[:]
    for k, v in entries.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = "cnnkit export: uint8 images [N,1,H,W] -> float32 logits [N,classes]"
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    atomic.write_bytes(path, proto.SerializeToString())
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def to_torchscript(module, meta: dict, path: Path) -> None:
    """Script `module` (faithful for any batch size) and save it with the metadata as an extra file."""
    import torch

    extra = {contract.TS_EXTRA_FILE: json.dumps(meta, sort_keys=True)}
    with quiet():  # torch.jit is deprecated upstream (torch.export is the successor); it still works
        scripted = torch.jit.script(module)
        atomic.write_with(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))


def export(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    formats: tuple[str, ...] = FORMATS,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ExportResult:
    """Export a checkpoint; with `verify`, files only land in `out_dir` when parity passes."""
    import onnx
    import torch

    from cnnkit.build import checkpoint

    t0 = time.perf_counter()
    ckpt = checkpoint.load(checkpoint_path)
    out = Path(out_dir) if out_dir is not None else ckpt.path.parent
    out.mkdir(parents=True, exist_ok=True)
    versions = {**checkpoint.versions(), "onnx": onnx.__version__}
    meta = contract.build_metadata(ckpt.meta, str(ckpt.path.resolve()), ckpt.sha256, versions)
    module = deployable(ckpt)
    staged: dict[str, Path] = {}
    final = {fmt: out / FILENAMES[fmt] for fmt in formats}
    opset_used = None
    try:
        with torch.inference_mode(False), torch.no_grad():
            for fmt in formats:
                # Stage under a hidden name: a failed parity check must not leave a good-looking artefact.
                staged[fmt] = out / f".staging-{os.getpid()}-{FILENAMES[fmt]}"
                if fmt == "onnx":
                    opset_used = to_onnx(module, example_input(ckpt), meta, staged[fmt], opset)
                else:
                    to_torchscript(module, meta, staged[fmt])
        report = None
        if verify:
            from cnnkit.build.verify import verify as run_verify

            report = run_verify(
                list(staged.values()),
                checkpoint_path=ckpt.path,
                atol=atol,
                rtol=rtol,
                names={str(p): str(final[f]) for f, p in staged.items()},
            )
        landed = {}
        if report is None or report:
            for fmt, tmp in staged.items():
                os.replace(tmp, final[fmt])
                landed[fmt] = str(final[fmt])
        return ExportResult(str(ckpt.path), ckpt.sha256, landed, time.perf_counter() - t0, report, opset_used)
    finally:
        for tmp in staged.values():
            if tmp.exists():
                tmp.unlink()
