"""`export()`: a checkpoint to ONNX and TorchScript, in fp32, INT8 or fp16, folded or not, metadata inside; files
are staged under hidden names and land only when they pass their gate."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit import contract
from cnnkit.contract import read_manifest
from cnnkit.errors import CnnkitError, option_error
from cnnkit.export import nncf_quant, precision, torch_formats
from cnnkit.export.artefacts import record_exports
from cnnkit.export.formats import example_input, fp32_proto, to_torchscript, write_onnx
from cnnkit.export.options import ExportOptions
from cnnkit.export.verify import int8_gates, verify
from cnnkit.runtime import gates
from cnnkit.train import checkpoint
from cnnkit.train.checkpoint import deployable

if TYPE_CHECKING:
    from cnnkit.export.precision import Calibration
    from cnnkit.export.verify import ParityReport
    from cnnkit.train.checkpoint import Checkpoint

__all__ = ["ExportOptions", "ExportResult", "export", "filename"]


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    checkpoint: str
    checkpoint_sha256: str
    artefacts: dict[str, str]  # format -> path; empty when parity failed
    seconds: float
    parity: ParityReport | None = None  # when verified
    opset: int | None = None
    variant: dict[str, Any] | None = None  # precision, folded, calibration
    model_version: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # format -> the one line naming why it did not export

    @property
    def ok(self) -> bool:
        return not self.failed and (self.parity is None or bool(self.parity))

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "artefacts": self.artefacts,
            "seconds": self.seconds,
            "opset": self.opset,
            "variant": self.variant,
            "model_version": self.model_version,
            "ok": self.ok,
            "failed": self.failed,
            "parity": self.parity.to_dict() if self.parity is not None else None,
        }


def filename(fmt: str, precision: str = "fp32") -> str:
    """model.onnx, model.int8.onnx, model.fp16.onnx, model.ts, model.pt2, model.aoti.pt2."""
    return contract.FILENAMES[fmt] if precision == "fp32" else f"model.{precision}.onnx"


def remove_stale_staging(out: Path) -> None:
    """Delete `.staging-<pid>-*` files left in `out` by an export that was killed (its process is gone)."""
    for f in out.glob(".staging-*"):
        pid = f.name.split("-")[1]
        if not (pid.isascii() and pid.isdigit()) or not f.is_file():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except (PermissionError, OverflowError, ValueError):
            pass


def export(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    options: ExportOptions = ExportOptions(),
    *,
    final_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a checkpoint into `out_dir` (default: its folder); with `options.verify`, files only land there when
    they pass the gate: fp32 exports must match the unfolded eager model within atol/rtol, INT8 and fp16 exports
    must agree with it on the real test split.

    The metadata records the checkpoint relative to `final_dir` (where the files will live; default `out_dir`), so
    no absolute build path travels with a model. `progress` hears of each step as it starts.
    """
    t0 = time.perf_counter()
    ckpt = checkpoint.load(checkpoint_path)
    out = Path(out_dir) if out_dir is not None else ckpt.path.parent
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    final = {fmt: out / filename(fmt, options.precision) for fmt in options.formats}
    staged = {fmt: out / f".staging-{os.getpid()}-{path.name}" for fmt, path in final.items()}
    try:
        meta, opset_used, failed = _write_staged(
            ckpt, options, staged, Path(final_dir) if final_dir is not None else out, progress
        )
        for fmt in failed:
            del staged[fmt]
        report = None
        if options.verify:
            if progress:
                progress(f"verifying against {ckpt.path.name} on {options.gate.device}")
            names = {str(p): str(final[f]) for f, p in staged.items()}
            report = verify(list(staged.values()), ckpt.path, options.gate, names=names)
        landed = {}
        if report is None or report:
            for fmt, tmp in staged.items():
                os.replace(tmp, final[fmt])
                landed[fmt] = str(final[fmt])
            gated = _gated_on(report, options, {str(final[f]): f for f in landed})
            record_exports(out, {f: final[f] for f in landed}, ckpt.sha256, meta["model_version"], gated)
        return ExportResult(
            checkpoint=str(ckpt.path),
            checkpoint_sha256=ckpt.sha256,
            artefacts=landed,
            seconds=time.perf_counter() - t0,
            parity=report,
            opset=opset_used,
            variant=meta["variant"],
            model_version=meta["model_version"],
            failed=failed,
        )
    finally:
        for tmp in staged.values():
            if tmp.exists():
                tmp.unlink()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed export leaves no empty folder behind


def _gated_on(
    report: ParityReport | None, options: ExportOptions, formats: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Format -> the passing INT8 gate of that file on this CPU (`runtime.gates`), from the export's own check."""
    if report is None:
        return {}
    records = int8_gates(report.backends, options.gate.engine)
    return {formats[name]: [record] for name, record in records.items() if name in formats}


def _metadata(ckpt: Checkpoint, options: ExportOptions, home: Path, calibration: Calibration | None) -> dict[str, Any]:
    """The metadata every file of this export carries; the checkpoint recorded relative to `home`."""
    import onnx

    variant: dict[str, Any] = {"precision": options.precision, "folded": checkpoint.folds(ckpt, options.fold)}
    if calibration is not None:
        variant["calibration"] = calibration.describe()
        if options.quantizer != "onnxruntime":  # absent for cnnkit's recipe: those files' versions are unchanged
            variant["quantizer"] = options.quantizer
    versions = {**checkpoint.versions(), "onnx": onnx.__version__}
    relative = os.path.relpath(ckpt.path.resolve(), home.resolve())
    return contract.build_metadata(ckpt.meta, relative, ckpt.sha256, versions, variant)


def _write_staged(
    ckpt: Checkpoint,
    options: ExportOptions,
    staged: dict[str, Path],
    home: Path,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], int | None, dict[str, str]]:
    """Write each format to its staging path; return the metadata, the ONNX opset written and the formats that did
    not export (format -> one line). A format that fails does not stop the others; when every format fails, the
    failure is the export's: CnnkitError."""
    import torch

    calibration = None
    if options.precision == "int8":
        calibration = precision.calibration_set(
            ckpt, options.calibration_images, options.calibration_seed, options.gate.data_dir
        )
        if options.quantizer == "nncf":
            nncf_quant.require()  # before anything is exported
            calibration = replace(calibration, method=nncf_quant.METHOD)
    meta = _metadata(ckpt, options, home, calibration)
    fold = checkpoint.folds(ckpt, options.fold)
    module = deployable(ckpt, fold=fold)
    opset_used, failed = None, {}
    with torch.inference_mode(False), torch.no_grad():
        for fmt, path in staged.items():
            if progress:
                progress(f"exporting {fmt} ({options.precision}{', folded' if fold else ''})")
            try:
                written = _write_one(fmt, ckpt, module, meta, path, options, fold, calibration)
            except CnnkitError as exc:
                failed[fmt] = str(exc)
                if progress and len(staged) > 1:
                    progress(f"{fmt} did not export: {exc}")
                continue
            opset_used = written if fmt == "onnx" else opset_used
    if len(failed) == len(staged):
        raise CnnkitError("; ".join(failed.values()) if len(failed) == 1 else
                          "no format exported: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))  # fmt: skip
    return meta, opset_used, failed


def _write_one(
    fmt: str,
    ckpt: Checkpoint,
    module: Any,
    meta: dict[str, Any],
    path: Path,
    options: ExportOptions,
    fold: bool,
    calibration: Calibration | None,
) -> int | None:
    """Write one format to `path`; for ONNX return the opset written. CnnkitError names the format and the cause."""
    if fmt == "torchscript":
        to_torchscript(module, meta, path)
        return None
    if fmt in ("exported", "aoti"):
        writer = torch_formats.to_exported if fmt == "exported" else torch_formats.to_aoti
        writer(module, example_input(ckpt), meta, path)
        return None
    proto = fp32_proto(ckpt, module, fold, options.opset)
    if calibration is not None and options.quantizer == "nncf":
        proto = nncf_quant.quantize(proto, calibration, contract.INPUT_NAME)
    elif calibration is not None:
        proto = precision.quantize_int8(proto, calibration, contract.INPUT_NAME)
    elif options.precision == "fp16":
        proto = precision.convert_fp16(proto)
    opset_used = write_onnx(proto, meta, path)
    if options.opset is not None and opset_used != options.opset:
        path.unlink(missing_ok=True)
        raise option_error(
            CnnkitError, "opset", options.opset, f"the exporter wrote opset {opset_used}; not keeping it"
        )
    return opset_used


def place(artefact: Path, dest: Path) -> Path:
    """An exported ONNX file copied to `dest` as a first-class export there: its metadata names the checkpoint
    relative to `dest`'s folder (after checking the checkpoint is the one it was exported from), and the folder's
    exports.json records it. The model version is unchanged: it is the same model."""
    import onnx

    from cnnkit.export.artefacts import find_checkpoint

    ckpt = find_checkpoint([artefact])
    proto = onnx.load(str(artefact))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props[contract.KEY])
    meta["checkpoint"]["path"] = os.path.relpath(ckpt.resolve(), dest.parent.resolve())
    write_onnx(proto, meta, dest)
    gated = (read_manifest(artefact.parent).get(artefact.name) or {}).get(gates.KEY)  # the same numbers: same gates
    record_exports(dest.parent, {"onnx": dest}, meta["checkpoint"]["sha256"], meta["model_version"],
                   {"onnx": gated} if isinstance(gated, list) else None)  # fmt: skip
    return dest
