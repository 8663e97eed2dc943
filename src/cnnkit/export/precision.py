"""Reduced-precision ONNX variants of an fp32 export: static INT8 (ONNX Runtime's quantizer) and fp16.

The input/output contract never changes (uint8 images in, float32 logits out), so the runtime, predict and serve
run every variant unchanged. Both conversions leave the in-graph normalisation (the nodes before the first
convolution: Cast, Mul, Sub, Mul) in fp32: it is cheap, and quantizing or halving it costs accuracy or validity.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.datasets import load_recorded
from cnnkit.errors import CnnkitError, first_line

# INT8: what static quantization is applied to. Measured on this model: normalisation is best left in fp32, and
# the last (output) layer too (MinMax calibration from a few hundred images clips extreme logits otherwise).
INT8_OP_TYPES = ["Conv", "Gemm", "MatMul", "MaxPool", "Relu", "Reshape"]


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """The real training images INT8 calibration ran on, and how."""

    images: np.ndarray  # uint8 [N, C, H, W]
    dataset: str
    seed: int
    method: str = "MinMax"
    batch: int = 64

    def describe(self) -> dict[str, Any]:
        return {
            "images": int(len(self.images)),
            "dataset": self.dataset,
            "seed": self.seed,
            "method": self.method,
            "source": "train split, drawn without replacement",
        }


def calibration_set(ckpt: Any, n: int, seed: int, data_dir: Any = None) -> Calibration:
    """`n` training images of the checkpoint's own dataset, drawn with `seed`."""
    ds = load_recorded(ckpt.meta.dataset, data_dir)
    if n < 1:
        raise CnnkitError(f"calibration needs at least 1 image, got {n}")
    n = min(n, len(ds.train_images))
    idx = np.sort(np.random.default_rng(seed).choice(len(ds.train_images), n, replace=False))
    images = np.ascontiguousarray(ds.train_images[idx])
    return Calibration(images=images, dataset=ds.name, seed=seed)


@contextlib.contextmanager
def _no_logging() -> Any:
    """The quantizer logs advice to the root logger; keep it out of cnnkit's output."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _normalisation_nodes(model: Any) -> list[str]:
    """Names of the nodes before the first Conv (the in-graph uint8 -> normalised float32 prologue)."""
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            break
        names.append(node.name)
    return names


def _output_node(model: Any) -> str:
    outputs = {o.name for o in model.graph.output}
    return next(n.name for n in model.graph.node if set(n.output) & outputs)


def _name_nodes(model: Any) -> None:
    """Give every node a unique name (the quantizer and the fp16 converter address nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def quantize_int8(
    fp32: Any,
    calibration: Calibration,
    input_name: str,
    keep_output_fp32: bool = True,
    unsigned_activations: bool = True,
    keep_first_conv_fp32: bool = True,
) -> Any:
    """Static INT8 quantization in QDQ format with per-channel int8 weights; returns the quantized ModelProto.

    The in-graph normalisation, the first convolution and (by default) the output layer stay fp32: quantizing the
    first convolution (its input is the normalised image) cost a model of RGB photo patches 7 points of top-1
    agreement with fp32 (92.7%, against 100% with it kept; docs/BENCHMARKS.md), for a layer that does a few percent
    of the seed network's work."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            imgs = calibration.images
            self._batches = iter([imgs[i : i + calibration.batch] for i in range(0, len(imgs), calibration.batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    # uint8 activations with int8 weights (U8S8): the combination ONNX Runtime recommends for x86 CPUs.
    activation = QuantType.QUInt8 if unsigned_activations else QuantType.QInt8
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    _name_nodes(model)
    exclude = _normalisation_nodes(model) + ([_output_node(model)] if keep_output_fp32 else [])
    if keep_first_conv_fp32:
        exclude += [next(n.name for n in model.graph.node if n.op_type == "Conv")]
    with tempfile.TemporaryDirectory(prefix="cnnkit-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _no_logging():
                warnings.simplefilter("ignore")
                quantize_static(
                    str(src),
                    str(dst),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=activation,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=INT8_OP_TYPES,
                    nodes_to_exclude=exclude,
                    calibrate_method=CalibrationMethod.MinMax,
                    calibration_providers=["CPUExecutionProvider"],
                )
        except Exception as exc:  # the quantizer's errors are deep; one line is what a user can act on
            raise CnnkitError(f"INT8 quantization failed: {first_line(exc)}") from None
        quantized = onnx.load(str(dst))
    if not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node):
        raise CnnkitError("INT8 quantization quantized nothing (no QuantizeLinear node in the result)")
    return quantized


def convert_fp16(fp32: Any) -> Any:
    """float16 weights and arithmetic, uint8 input and float32 output kept; returns the converted ModelProto."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    _name_nodes(model)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The normalisation stays fp32: converted, its uint8->float Cast keeps to=FLOAT against fp16
            # constants and the model no longer type-checks.
            converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=_normalisation_nodes(model))
    except Exception as exc:
        raise CnnkitError(f"fp16 conversion failed: {first_line(exc)}") from None
    _sort_nodes(converted.graph)  # the converter appends the casts it inserts at the end of the node list
    # Its value_info still calls the kept-fp32 normalisation outputs float16; shape inference rebuilds them.
    del converted.graph.value_info[:]
    return converted


def _sort_nodes(graph: Any) -> None:
    """Reorder `graph.node` topologically (ONNX requires it), keeping the original order among ready nodes."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise CnnkitError("fp16 conversion produced a graph with a cycle or a missing input")
        for n in ready:
            available.update(n.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)
