"""Embed an exported cnnkit model with ONNX Runtime (or OpenVINO). Imports numpy and onnxruntime only (never torch;
OpenVINO only when it is asked for).

    from cnnkit.runtime import Classifier
    clf = Classifier("model.onnx", device="auto")
    clf.predict(image)[0].label        # '7'
    clf.providers                      # what actually runs, e.g. ['CPUExecutionProvider']
    Classifier("model.onnx", engine="openvino")   # or EngineChoice(engine="openvino", streams=2), or "auto"

Everything the model needs (class names, input size) is read from the .onnx file's metadata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# numpy only, and bound here eagerly: the function `predictions` must not be shadowed by its module's name
from cnnkit.runtime.predictions import Prediction, predictions, softmax
from cnnkit.spec import DEVICES

if TYPE_CHECKING:
    from cnnkit.runtime.classifier import FALLBACKS, Classifier, ProviderFallbackWarning
    from cnnkit.runtime.cuda import DeviceRunner
    from cnnkit.runtime.inputs import InputSpec
    from cnnkit.runtime.options import CudaOptions, EngineChoice
    from cnnkit.runtime.session import CPU_EP, CUDA_EP, gpu_visible

# imported when first named, so that `cnnkit.runtime.images` (the decode rule the image-folder loader's worker
# processes run) does not load ONNX Runtime
_WHERE = {
    "FALLBACKS": "classifier", "Classifier": "classifier", "ProviderFallbackWarning": "classifier",
    "DeviceRunner": "cuda", "InputSpec": "inputs", "CudaOptions": "options", "EngineChoice": "options",
    "CPU_EP": "session", "CUDA_EP": "session", "gpu_visible": "session",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"cnnkit.runtime.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'cnnkit.runtime' has no attribute {name!r}")


__all__ = [
    "CPU_EP",
    "CUDA_EP",
    "DEVICES",
    "FALLBACKS",
    "Classifier",
    "CudaOptions",
    "DeviceRunner",
    "EngineChoice",
    "InputSpec",
    "Prediction",
    "ProviderFallbackWarning",
    "gpu_visible",
    "predictions",
    "softmax",
]
