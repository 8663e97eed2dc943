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
from cnnkit.errors import CnnkitError, first_line
from cnnkit.export.artifacts import FORMATS, record_exports
from cnnkit.spec import EXPORT_PRECISIONS
from cnnkit.train.checkpoint import deployable

if TYPE_CHECKING:
    from cnnkit.export.verify import ParityReport

__all__ = ["FORMATS", "ExportResult", "export", "example_input", "filename", "to_torchscript"]


@dataclass(frozen=True)
class ExportResult:
    checkpoint: str
    checkpoint_sha256: str
    artefacts: dict[str, str]  # format -> path; empty when parity failed
    seconds: float
    parity: ParityReport | None = None  # when verified
    opset: int | None = None
    variant: dict | None = None  # precision, folded, calibration
    model_version: str | None = None

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
            "variant": self.variant,
            "model_version": self.model_version,
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


def onnx_proto(module, example, opset: int | None = None) -> Any:
    """Export `module` with the dynamo exporter and a dynamic batch axis; return the ModelProto."""
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
            return program.model_proto
    except CnnkitError:
        raise
    except Exception as exc:  # exporter errors are many and deep; surface one line plus the log tail
        if _interrupted(exc):  # torch.export wraps a Ctrl-C in its own error: it is still a Ctrl-C (exit 130)
            raise KeyboardInterrupt from None
        tail = log.getvalue().strip().splitlines()[-1:]
        raise CnnkitError(f"ONNX export failed: {first_line(exc)} {' '.join(tail)}".strip()) from None


def _interrupted(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return "KeyboardInterrupt" in str(exc)


_PROTO_CACHE: dict[tuple[str, bool, int | None], bytes] = {}  # the dynamo exporter takes seconds per call


def fp32_proto(ckpt: Any, module: Any, fold: bool, opset: int | None) -> Any:
    """The fp32 ONNX export of a checkpoint (a fresh ModelProto): exported once per process for each (checkpoint,
    fold, opset), so the INT8 and fp16 variants of one run share the exporter's work."""
    import onnx

    key = (ckpt.sha256, fold, opset)
    if key not in _PROTO_CACHE:
        if len(_PROTO_CACHE) >= 4:
            _PROTO_CACHE.pop(next(iter(_PROTO_CACHE)))
        _PROTO_CACHE[key] = onnx_proto(module, example_input(ckpt), opset).SerializeToString()
    proto = onnx.ModelProto()
    proto.ParseFromString(_PROTO_CACHE[key])
    return proto


def write_onnx(proto: Any, meta: dict, path: Path) -> int:
    """Put the metadata into `proto`, check it, write it atomically; return its opset."""
    import onnx

    del proto.metadata_props[:]
    proto.metadata_props.add(key=contract.KEY, value=json.dumps(meta, sort_keys=True))
    proto.doc_string = "cnnkit export: uint8 images [batch,C,H,W] -> float32 logits [batch,classes]"
    proto.model_version = int(meta["model_version"], 16)  # ONNX's int64 field: the 12 hex digits as a number
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:  # a converter that produced an invalid graph must not land
        raise CnnkitError(f"the exported ONNX graph is invalid: {first_line(exc)}") from None
    atomic.write_bytes(path, proto.SerializeToString())
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def to_torchscript(module, meta: dict, path: Path) -> None:
    """Script `module` (faithful for any batch size) and save it with the metadata as an extra file."""
    import torch

    extra = {contract.TS_EXTRA_FILE: json.dumps(meta, sort_keys=True)}
    with quiet():  # torch.jit is deprecated upstream (torch.export is the successor); it still works
        scripted = torch.jit.script(module)
        atomic.write_with(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))


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


def filename(fmt: str, precision: str = "fp32") -> str:
    """model.onnx, model.int8.onnx, model.fp16.onnx, model.ts."""
    return contract.FILENAMES[fmt] if precision == "fp32" else f"model.{precision}.onnx"


def export(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    formats: tuple[str, ...] = FORMATS,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    precision: str = "fp32",
    fold: bool = True,
    calibration_images: int = 512,
    calibration_seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    min_agreement: float = 0.995,
    max_accuracy_drop: float = 0.3,
    device: str = "cpu",
    final_dir: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export a checkpoint; with `verify`, files only land in `out_dir` when they pass their check.

    fp32 exports must match the unfolded eager model within atol/rtol; INT8 and fp16 exports must agree with it on
    the real test split (top-1 agreement >= `min_agreement`, accuracy at most `max_accuracy_drop` points lower).
    `fold` merges fc1 and fc2 into one exact linear layer (the default; `fold=False` mirrors the training module).
    The metadata records the checkpoint relative to `final_dir` (where the files will live; default `out_dir`), so
    no absolute build path travels with a model.
    """
    import onnx
    import torch

    from cnnkit.train import checkpoint

    if precision not in EXPORT_PRECISIONS:
        raise CnnkitError(f"unknown precision {precision!r}; expected one of {', '.join(EXPORT_PRECISIONS)}")
    if precision != "fp32" and "torchscript" in formats:
        raise CnnkitError(f"--precision {precision} applies to ONNX only; use --format onnx")
    t0 = time.perf_counter()
    ckpt = checkpoint.load(checkpoint_path)
    out = Path(out_dir) if out_dir is not None else ckpt.path.parent
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    versions = {**checkpoint.versions(), "onnx": onnx.__version__}
    variant: dict[str, Any] = {"precision": precision, "folded": fold}
    calibration = None
    if precision == "int8":
        from cnnkit.export.precision import calibration_set

        calibration = calibration_set(ckpt, calibration_images, calibration_seed, data_dir)
        variant["calibration"] = calibration.describe()
    home = Path(final_dir) if final_dir is not None else out
    relative = os.path.relpath(ckpt.path.resolve(), home.resolve())
    meta = contract.build_metadata(ckpt.meta, relative, ckpt.sha256, versions, variant)
    module = deployable(ckpt, fold=fold)
    staged: dict[str, Path] = {}
    final = {fmt: out / filename(fmt, precision) for fmt in formats}
    opset_used = None
    try:
        with torch.inference_mode(False), torch.no_grad():
            for fmt in formats:
                # Stage under a hidden name: a failed check must not leave a good-looking artefact.
                staged[fmt] = out / f".staging-{os.getpid()}-{final[fmt].name}"
                if fmt == "torchscript":
                    to_torchscript(module, meta, staged[fmt])
                    continue
                proto = fp32_proto(ckpt, module, fold, opset)
                if calibration is not None:
                    from cnnkit.export.precision import quantize_int8

                    proto = quantize_int8(proto, calibration, contract.INPUT_NAME)
                elif precision == "fp16":
                    from cnnkit.export.precision import convert_fp16

                    proto = convert_fp16(proto)
                opset_used = write_onnx(proto, meta, staged[fmt])
                if opset is not None and opset_used != opset:
                    raise CnnkitError(f"--opset {opset}: the exporter wrote opset {opset_used}; not keeping it")
        report = None
        if verify:
            from cnnkit.export.verify import verify as run_verify

            report = run_verify(
                list(staged.values()),
                checkpoint_path=ckpt.path,
                atol=atol,
                rtol=rtol,
                names={str(p): str(final[f]) for f, p in staged.items()},
                data_dir=data_dir,
                device=device,
                min_agreement=min_agreement,
                max_accuracy_drop=max_accuracy_drop,
            )
        landed = {}
        if report is None or report:
            for fmt, tmp in staged.items():
                os.replace(tmp, final[fmt])
                landed[fmt] = str(final[fmt])
            record_exports(out, {f: final[f] for f in staged}, ckpt.sha256, meta["model_version"])
        return ExportResult(
            str(ckpt.path),
            ckpt.sha256,
            landed,
            time.perf_counter() - t0,
            report,
            opset_used,
            variant,
            meta["model_version"],
        )
    finally:
        for tmp in staged.values():
            if tmp.exists():
                tmp.unlink()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed export leaves no empty folder behind
