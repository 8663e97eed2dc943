"""Static INT8 by NNCF (the `nncf` extra), OpenVINO's post-training quantizer, on the ONNX model itself: the result
is a QDQ .onnx file like ONNX Runtime's quantizer writes, so both engines, the runtime, predict and serve run it
unchanged. NNCF's own recipe (its performance preset: symmetric INT8 activations and per-channel weights, every
convolution and linear layer, fast bias correction) is what a user reaching for OpenVINO's tooling would get; on
CPUs with VNNI it can run faster than cnnkit's own recipe, and the accuracy gate decides whether it may be used."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from typing import Any

from cnnkit.errors import CnnkitError, MissingExtraError, first_line
from cnnkit.export.precision import Calibration

INSTALL = "pip install 'cnnkit[nncf]'"
METHOD = "NNCF post-training quantization, performance preset"


def available() -> bool:
    return importlib.util.find_spec("nncf") is not None


def require() -> None:
    if not available():
        raise MissingExtraError(f"--quantizer nncf needs NNCF, which is not installed: {INSTALL}")


@contextlib.contextmanager
def _quiet() -> Any:
    """NNCF logs, warns and draws progress bars; none of it belongs in cnnkit's output."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def quantize(fp32: Any, calibration: Calibration, input_name: str) -> Any:
    """The fp32 ModelProto quantized by NNCF on `calibration`'s images (all of them); returns the ModelProto, its
    metadata kept. The uint8 input and the float32 output are unchanged."""
    require()
    with _quiet():
        import nncf

        nncf.set_log_level(logging.ERROR)
        imgs = calibration.images
        batches = [imgs[i : i + calibration.batch] for i in range(0, len(imgs), calibration.batch)]
        try:
            quantized = nncf.quantize(
                fp32,
                nncf.Dataset(batches, lambda batch: {input_name: batch}),
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(imgs),
            )
        except Exception as exc:  # NNCF's errors come from deep in its graph passes; one line is actionable
            raise CnnkitError(f"INT8 quantization by NNCF failed: {first_line(exc)}") from None
    if not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node):
        raise CnnkitError("INT8 quantization by NNCF quantized nothing (no QuantizeLinear node in the result)")
    return quantized
