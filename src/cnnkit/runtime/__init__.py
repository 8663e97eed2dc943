"""Embed an exported cnnkit model with ONNX Runtime (or OpenVINO). Imports numpy and onnxruntime only (never torch;
OpenVINO only when it is asked for).

    from cnnkit.runtime import Classifier
    clf = Classifier("model.onnx", device="auto")
    clf.predict(image)[0].label        # '7'
    clf.providers                      # what actually runs, e.g. ['CPUExecutionProvider']
    Classifier("model.onnx", engine="openvino")   # or EngineChoice(engine="openvino", streams=2), or "auto"

Everything the model needs (class names, input size) is read from the .onnx file's metadata.
"""

from cnnkit.runtime.classifier import FALLBACKS, Classifier, ProviderFallbackWarning
from cnnkit.runtime.cuda import DeviceRunner
from cnnkit.runtime.inputs import InputSpec
from cnnkit.runtime.options import CudaOptions, EngineChoice
from cnnkit.runtime.predictions import Prediction, predictions, softmax
from cnnkit.runtime.session import CPU_EP, CUDA_EP, gpu_visible
from cnnkit.spec import DEVICES

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
