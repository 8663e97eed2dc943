"""`Classifier`: an exported cnnkit model in an ONNX Runtime session. Imports numpy and onnxruntime only."""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from cnnkit import contract
from cnnkit.errors import DeviceError, ModelFileError
from cnnkit.runtime import cuda, session
from cnnkit.runtime.inputs import InputSpec
from cnnkit.runtime.predictions import Prediction, predictions, softmax
from cnnkit.spec import DEVICES

Fallback = Literal["warn", "raise", "ignore"]
FALLBACKS = ("warn", "raise", "ignore")


class ProviderFallbackWarning(RuntimeWarning):
    """CUDA was asked for but ONNX Runtime runs the model on the CPU."""


class Classifier:
    """A cnnkit ONNX model in an ONNX Runtime session, ready for thread-safe batch inference.

    Args:
        model: path to the .onnx file, or its bytes.
        device: "cpu", "cuda" (CUDA provider, CPU for what it cannot run) or "auto" (CUDA where a GPU is visible).
        fallback: what happens when CUDA was asked for and ONNX Runtime runs on the CPU instead: "warn"
            (a ProviderFallbackWarning, once), "raise" (DeviceError) or "ignore" (read `fallback_reason`).
        intra_op_threads: CPU threads per inference (default: ONNX Runtime's choice, one per core).
        max_batch: larger inputs are run in chunks of this many images.
        tf32: allow TF32 math on the CUDA provider (faster, less exact; off by default).
        enable_cuda_graph: capture a CUDA graph (fixed shapes; use `cuda_graph_runner`).
        device_id: the CUDA device.
        compute_stream: a CUDA stream handle (e.g. `torch.cuda.current_stream().cuda_stream`) for ONNX Runtime
            to run on, so that GPU inputs produced on that stream are ordered before the model reads them.

    Raises:
        ModelFileError: the file is missing, not ONNX, or not a cnnkit model.
        DeviceError: an unknown device, or a CUDA fall-back with `fallback="raise"`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        device: str = "auto",
        *,
        fallback: Fallback = "warn",
        intra_op_threads: int | None = None,
        max_batch: int = 256,
        tf32: bool = False,
        enable_cuda_graph: bool = False,
        device_id: int = 0,
        compute_stream: int | None = None,
    ):
        if device not in DEVICES:
            raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        data, self.source = session.read_model(model)
        self.requested_device = device
        self.max_batch = int(max_batch)
        self.device_id = device_id
        want_cuda = device == "cuda" or (
            device == "auto" and session.gpu_visible() and session.CUDA_EP in ort.get_available_providers()
        )
        options = session.cuda_provider_options(device_id, tf32, enable_cuda_graph, compute_stream)
        self.session, reason, _ = session.open_session(data, self.source, want_cuda, intra_op_threads, options)
        self.info = self._read_info()
        self.input_spec = InputSpec(
            name=self.info.input_name,
            channels=self.info.channels,
            height=self.info.image_size,
            width=self.info.image_size,
        )
        self._outputs = [self.info.output_name]
        #: why CUDA was asked for but ONNX Runtime runs on the CPU (None when it runs as asked)
        self.fallback_reason: str | None = reason
        if reason and device == "cuda" and fallback != "ignore":
            if fallback == "raise":
                raise DeviceError(self.fallback_message)
            warnings.warn(self.fallback_message or reason, ProviderFallbackWarning, stacklevel=2)

    def _read_info(self) -> contract.ModelInfo:
        meta = self.session.get_modelmeta().custom_metadata_map
        if contract.KEY not in meta:
            raise ModelFileError(
                f"{self.source}: not a cnnkit model (no '{contract.KEY}' metadata); export it with `cnnkit export`"
            )
        info = contract.ModelInfo.from_json(meta[contract.KEY], self.source)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if info.input_name not in inputs or info.output_name not in outputs:
            raise ModelFileError(
                f"{self.source}: graph inputs {sorted(inputs)} / outputs {sorted(outputs)} do not "
                f"match the metadata ('{info.input_name}' -> '{info.output_name}')"
            )
        if inputs[info.input_name].type != "tensor(uint8)":
            raise ModelFileError(
                f"{self.source}: input '{info.input_name}' is {inputs[info.input_name].type}, expected tensor(uint8)"
            )
        in_shape = list(inputs[info.input_name].shape or [])
        expected = [info.channels, info.image_size, info.image_size]
        if len(in_shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(in_shape[1:], expected)):
            raise ModelFileError(
                f"{self.source}: input '{info.input_name}' has shape {in_shape}, but the metadata says "
                f"[N, {', '.join(map(str, expected))}]"
            )
        out = outputs[info.output_name]
        if out.type != "tensor(float)" or len(out.shape or []) != 2:
            raise ModelFileError(
                f"{self.source}: output '{info.output_name}' is {out.type} of shape {out.shape}; "
                "expected float32 logits [N, classes]"
            )
        width = out.shape[-1]
        if isinstance(width, int) and width != info.num_classes:
            raise ModelFileError(
                f"{self.source}: the model has {width} outputs but its metadata names {info.num_classes} classes"
            )
        return info

    # ----------------------------------------------------------------------------------------- facts

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        return list(self.session.get_providers())

    @property
    def device(self) -> str:
        """'cuda' when the CUDA provider is active, else 'cpu'."""
        return "cuda" if session.CUDA_EP in self.providers else "cpu"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def fallback_message(self) -> str | None:
        """The one-line warning for a CUDA fall-back, with the fix (None when there was none)."""
        if not self.fallback_reason:
            return None
        return f"CUDA was requested but ONNX Runtime runs on CPU: {self.fallback_reason}. Fix: {session.CUDA_FIX}"

    @property
    def node_assignment(self) -> dict[str, list[str]] | None:
        """Which execution provider runs each node of the optimised graph: {provider: ["Conv", ...]}.

        None where this onnxruntime cannot say (before 1.31). A CUDA graph needs every node on CUDA.
        """
        return session.node_assignment(self.session)

    # ------------------------------------------------------------------------------------- inference

    def as_batch(self, images: Any) -> np.ndarray:
        """The model's uint8 [N, C, H, W] batch for `images` (see `InputSpec.batch`), or InputError."""
        return self.input_spec.batch(images)

    def logits(self, images: Any) -> np.ndarray:
        """Raw float32 logits [N, classes] for `images` (any accepted form), in chunks of `max_batch`."""
        # Fast path: a ready uint8 NCHW batch skips conversion (keeps per-call overhead to microseconds).
        x = images if self.input_spec.is_ready(images) else self.input_spec.batch(images)
        n = x.shape[0]
        feed = self.input_spec.name
        if n <= self.max_batch:
            return np.asarray(self.session.run(self._outputs, {feed: x})[0])
        return np.concatenate(
            [self.session.run(self._outputs, {feed: x[i : i + self.max_batch]})[0] for i in range(0, n, self.max_batch)]
        )

    def probabilities(self, images: Any) -> np.ndarray:
        """Softmax probabilities [N, classes]."""
        return softmax(self.logits(images))

    def predict(self, images: Any, top_k: int = 1) -> list[Prediction]:
        """One Prediction per image, with the `top_k` most probable classes."""
        return predictions(self.probabilities(images), self.info.classes, top_k)

    # ------------------------------------------------------------------------------ CUDA, IO binding

    def _require_cuda(self, what: str) -> None:
        if self.device != "cuda":
            raise DeviceError(f"{what} needs the CUDA provider, but this session runs on {self.providers}")

    def logits_on_device(self, images: Any, out: Any = None) -> Any:
        """Run a batch that already lives on the GPU, with no host round trip (IO binding).

        Args:
            images: a CUDA uint8 tensor [N, C, H, W] that speaks DLPack (e.g. a torch CUDA tensor), or an OrtValue.
            out: optional CUDA float32 tensor [N, classes] (with `data_ptr()`) to write the logits into.
        Returns:
            `out` when given, else an OrtValue on the GPU (`.numpy()` copies it to the host).
        """
        self._require_cuda("logits_on_device")
        return cuda.run_on_device(self._io(), images, out)

    def device_runner(self, batch_size: int) -> cuda.DeviceRunner:
        """A fixed-batch runner with its buffers on the GPU (`run(host_batch)`, or `replay()` on what is there)."""
        self._require_cuda("device_runner")
        return cuda.DeviceRunner(self._io(), batch_size)

    def cuda_graph_runner(self, batch_size: int) -> cuda.DeviceRunner:
        """A fixed-shape runner for a session made with `enable_cuda_graph=True`: each run replays the graph."""
        self._require_cuda("cuda_graph_runner")
        return cuda.DeviceRunner(self._io(), batch_size)

    def _io(self) -> cuda.ModelIO:
        return cuda.ModelIO(self.session, self.input_spec, self.info.output_name, self.info.num_classes, self.device_id)
