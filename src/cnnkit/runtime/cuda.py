"""GPU-resident inference: IO binding on CUDA tensors and CUDA-graph replay. Imports onnxruntime only."""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from cnnkit.errors import InputError
from cnnkit.runtime.inputs import InputSpec


class ModelIO(NamedTuple):
    """What IO binding needs of a model's session (a Classifier hands it over)."""

    session: ort.InferenceSession
    spec: InputSpec
    output_name: str
    num_classes: int
    device_id: int


def device_input_problem(value: ort.OrtValue, expected: tuple[int, int, int]) -> str | None:
    """Why `value` cannot be a device batch [N, *expected] of uint8 on CUDA, or None when it can."""
    # OrtValue.data_type() is "tensor(uint8)"; element_type() is the ONNX type number, not a numpy type.
    dtype = value.data_type()
    shape = list(value.shape())
    device = value.device_name().lower()
    if (
        device != "cuda"
        or dtype != "tensor(uint8)"
        or len(shape) != 4
        or tuple(shape[1:]) != tuple(expected)
        or shape[0] < 1
    ):
        want = ", ".join(map(str, expected))
        got = dtype.removeprefix("tensor(").removesuffix(")")
        return f"device input must be a CUDA uint8 tensor [N, {want}], got {got} {shape} on {device}"
    return None


def run_on_device(io: ModelIO, images: Any, out: Any = None) -> Any:
    """IO-bound run of a CUDA batch (DLPack tensor or OrtValue); see `Classifier.logits_on_device`."""
    value = images if isinstance(images, ort.OrtValue) else ort.OrtValue.from_dlpack(images)
    problem = device_input_problem(value, io.spec.image_shape)
    if problem:
        raise InputError(problem)
    n = value.shape()[0]
    binding = io.session.io_binding()
    binding.bind_ortvalue_input(io.spec.name, value)
    binding.synchronize_inputs()  # the producer's pending writes to `images` complete before we read it
    if out is not None:
        binding.bind_output(io.output_name, "cuda", io.device_id, np.float32, [n, io.num_classes], out.data_ptr())
    else:
        binding.bind_output(io.output_name, "cuda", io.device_id)
    io.session.run_with_iobinding(binding)
    return out if out is not None else binding.get_outputs()[0]


class DeviceRunner:
    """A fixed batch size on the GPU: preallocated input and output buffers, IO-bound once, inputs updated in
    place. In a session made with `CudaOptions(cuda_graph=True)` every run replays ONNX Runtime's captured CUDA
    graph."""

    def __init__(self, io: ModelIO, batch_size: int):
        self.io = io
        self.batch_size = batch_size
        self.input = ort.OrtValue.ortvalue_from_shape_and_type(
            (batch_size, *io.spec.image_shape), np.uint8, "cuda", io.device_id
        )
        self.output = ort.OrtValue.ortvalue_from_shape_and_type(
            (batch_size, io.num_classes), np.float32, "cuda", io.device_id
        )
        self.binding = io.session.io_binding()
        self.binding.bind_ortvalue_input(io.spec.name, self.input)
        self.binding.bind_ortvalue_output(io.output_name, self.output)
        self._lock = threading.Lock()

    def run(self, images: Any) -> np.ndarray:
        """Copy a host uint8 batch of exactly `batch_size` images in, run, return host logits."""
        x = self.io.spec.batch(images)
        if x.shape[0] != self.batch_size:
            raise InputError(f"this runner was made for batch {self.batch_size}, got {x.shape[0]}")
        with self._lock:
            self.input.update_inplace(x)
            self.io.session.run_with_iobinding(self.binding)
            return np.asarray(self.output.numpy())

    def replay(self) -> None:
        """Run on whatever is in the bound input buffer (for benchmarks: no host copies)."""
        self.io.session.run_with_iobinding(self.binding)
