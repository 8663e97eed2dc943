"""The two file formats an export writes: ONNX (the dynamo exporter, checked, metadata in `metadata_props`) and
TorchScript (scripted, metadata as an extra file)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnkit import atomic, contract
from cnnkit.errors import CnnkitError, first_line


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Keep exporter chatter (prints, deprecation and tracer warnings) out of cnnkit's output."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield sink


def example_input(ckpt: Any) -> Any:
    """A uint8 batch of two images of the checkpoint's input shape (the exporter's example)."""
    import torch

    return torch.zeros(2, *ckpt.meta.geometry.shape, dtype=torch.uint8)


def onnx_proto(module, example, opset: int | None = None) -> Any:
    """Export `module` with the dynamo exporter and a dynamic batch axis; return the ModelProto."""
    import torch

    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    try:
        with quiet():
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
        raise CnnkitError(f"ONNX export failed: {root_line(exc)}") from None


def root_line(exc: BaseException) -> str:
    """The first line of the innermost cause (the ONNX exporter wraps torch.export's error, which names the
    construct, in its own), without terminal colour codes."""
    seen: set[int] = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return re.sub(r"\x1b\[[0-9;]*m", "", first_line(exc))


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


def strip_debug_info(proto: Any) -> None:
    """Drop the exporter's per-node and per-value metadata (Python stack traces with the exporting machine's paths,
    module names) and doc strings: an exported file carries cnnkit's metadata and nothing about where it was made."""
    graphs = [proto.graph, *(f for f in proto.functions)]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        for values in ("input", "output", "value_info", "initializer"):
            for value in getattr(graph, values, []):
                if hasattr(value, "metadata_props"):
                    del value.metadata_props[:]
                if hasattr(value, "doc_string"):
                    value.doc_string = ""


def write_onnx(proto: Any, meta: dict, path: Path) -> int:
    """Put the metadata into `proto`, check it, write it atomically; return its opset."""
    import onnx

    strip_debug_info(proto)
    del proto.metadata_props[:]
    proto.metadata_props.add(key=contract.KEY, value=json.dumps(meta, sort_keys=True))
    for key, value in contract.image_metadata(meta).items():  # ONNX's standard keys for image inputs
        proto.metadata_props.add(key=key, value=value)
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
        try:
            scripted = torch.jit.script(module)
        except Exception as exc:  # the scripting compiler's errors are long; the first line names the construct
            raise CnnkitError(f"TorchScript export failed: {first_line(exc)}") from None
        atomic.write_with(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))
