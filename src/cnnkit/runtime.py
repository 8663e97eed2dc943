"""Embed an exported cnnkit model with ONNX Runtime. Imports numpy and onnxruntime only (never torch).

    from cnnkit.runtime import Classifier
    clf = Classifier("model.onnx", device="auto")
    clf.predict(image)[0].label        # '7'
    clf.providers                      # what actually runs, e.g. ['CPUExecutionProvider']

Everything the model needs (class names, input size) is read from the .onnx file's metadata.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from cnnkit import metadata, ort_cuda
from cnnkit.errors import DeviceError, InputError, ModelFileError

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
CUDA_FIX = (
    "install the CUDA 13 and cuDNN 9 runtime libraries that onnxruntime-gpu needs (e.g. the nvidia-*-cu13 and "
    "nvidia-cudnn-cu13 wheels, which a CUDA build of torch brings) and check `nvidia-smi`; run `cnnkit doctor`"
)


class ProviderFallbackWarning(RuntimeWarning):
    """CUDA was asked for but ONNX Runtime runs the model on the CPU."""


@dataclass(frozen=True)
class Prediction:
    """One image's result: the top class and the `top_k` (class name, probability) pairs."""

    index: int
    label: str
    probability: float
    top_k: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "probability": self.probability,
                "top_k": [{"label": lb, "probability": p} for lb, p in self.top_k]}


def gpu_visible() -> bool:
    """An NVIDIA GPU is visible to this process (driver device nodes present), checked without CUDA."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or bool(glob.glob("/proc/driver/nvidia/gpus/*"))


def cuda_fallback_reason(ort_log: str = "") -> str:
    """Why ONNX Runtime's CUDA provider could not be used here: its own error line when `ort_log` (what it
    logged while the session was made) has one, else the likeliest cause."""
    if CUDA_EP not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.get_device()}) has no CUDA provider; install onnxruntime-gpu"
    if not gpu_visible():
        return "no NVIDIA GPU is visible (no /dev/nvidia* device)"
    error = ort_cuda.ort_error(ort_log)
    if error:
        return f"the CUDA provider failed to load: {error}"
    return "the CUDA provider failed to load (usually missing or mismatched CUDA/cuDNN libraries)"


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    # which provider runs each node (`Classifier.node_assignment`); a key older releases ignore
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        so.intra_op_num_threads = int(intra_op_threads)
    so.log_severity_level = 3  # errors only; provider fall-backs are reported by cnnkit itself
    return so


def cuda_provider_options(device_id: int = 0, tf32: bool = False, enable_cuda_graph: bool = False,
                          compute_stream: int | None = None) -> dict:
    opts = {
        "device_id": str(device_id),
        # HEURISTIC picks a conv algorithm without timing them all: no first-request stall, steady latency.
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
        # TF32 is on by default on Ampere+ and costs fp32 parity (~1e-3 error); off unless asked for.
        "use_tf32": "1" if tf32 else "0",
        "enable_cuda_graph": "1" if enable_cuda_graph else "0",
    }
    if compute_stream:
        # Run on the caller's CUDA stream (e.g. torch's), so work queued there is ordered with ours.
        opts["user_compute_stream"] = str(int(compute_stream))
        opts["has_user_compute_stream"] = "1"
    return opts


def read_model(source: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    p = Path(source)
    if not p.is_file():
        raise ModelFileError(f"{p}: ONNX model not found")
    return p.read_bytes(), str(p)


class Classifier:
    """A cnnkit ONNX model in an ONNX Runtime session, ready for thread-safe batch inference.

    Args:
        model: path to the .onnx file, or its bytes.
        device: "cpu", "cuda" (CUDA provider, CPU for what it cannot run) or "auto" (CUDA where a GPU is visible).
        strict: raise DeviceError instead of warning when CUDA was asked for and ONNX Runtime fell back to CPU.
        intra_op_threads: CPU threads per inference (default: ONNX Runtime's choice, one per core).
        max_batch: larger inputs are run in chunks of this many images.
        tf32: allow TF32 math on the CUDA provider (faster, less exact; off by default).
        enable_cuda_graph: capture a CUDA graph (fixed shapes; use `cuda_graph_runner`).
        device_id: the CUDA device.
        compute_stream: a CUDA stream handle (e.g. `torch.cuda.current_stream().cuda_stream`) for ONNX Runtime
            to run on, so that GPU inputs produced on that stream are ordered before the model reads them.
    """

    def __init__(self, model: str | os.PathLike | bytes, device: str = "auto", *, strict: bool = False,
                 intra_op_threads: int | None = None, max_batch: int = 256, tf32: bool = False,
                 enable_cuda_graph: bool = False, device_id: int = 0, compute_stream: int | None = None):
        if device not in DEVICES:
            raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        data, self.source = read_model(model)
        self.requested_device = device
        self.max_batch = int(max_batch)
        self.device_id = device_id
        want_cuda = device == "cuda" or (device == "auto" and gpu_visible() and CUDA_EP in ort.get_available_providers())
        providers: list[Any] = [CPU_EP]
        if want_cuda:
            ort_cuda.preload_cuda_libraries()
            providers = [(CUDA_EP, cuda_provider_options(device_id, tf32, enable_cuda_graph, compute_stream)), CPU_EP]
        # ONNX Runtime logs provider problems to the process's stderr: read them (the real error line becomes
        # the fall-back reason) and pass on only what cnnkit does not report itself.
        log = ort_cuda.capture_stderr_fd() if want_cuda else contextlib.nullcontext({"text": ""})
        try:
            with log as captured:
                self.session = ort.InferenceSession(data, sess_options=session_options(intra_op_threads),
                                                    providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
            sys.stderr.write(ort_cuda.passthrough(captured["text"], fell_back=False))
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.source}: ONNX Runtime cannot load this model ({first})") from None
        fell_back = want_cuda and CUDA_EP not in self.session.get_providers()
        sys.stderr.write(ort_cuda.passthrough(captured["text"], fell_back=fell_back))
        self.info = self._read_info()
        self.fallback_reason: str | None = None
        if fell_back:
            self.fallback_reason = cuda_fallback_reason(captured["text"])
            if device == "cuda":
                msg = f"CUDA was requested but ONNX Runtime runs on CPU: {self.fallback_reason}. Fix: {CUDA_FIX}"
                if strict:
                    raise DeviceError(msg)
                warnings.warn(msg, ProviderFallbackWarning, stacklevel=2)
        self._input = self.info.input_name
        self._outputs = [self.info.output_name]
        self._expected = (self.info.channels, self.info.image_size, self.info.image_size)

    def _read_info(self) -> metadata.ModelInfo:
        meta = self.session.get_modelmeta().custom_metadata_map
        if metadata.KEY not in meta:
            raise ModelFileError(f"{self.source}: not a cnnkit model (no '{metadata.KEY}' metadata); "
                                 "export it with `cnnkit export`")
        info = metadata.ModelInfo.from_json(meta[metadata.KEY], self.source)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if info.input_name not in inputs or info.output_name not in outputs:
            raise ModelFileError(f"{self.source}: graph inputs {sorted(inputs)} / outputs {sorted(outputs)} do not "
                                 f"match the metadata ('{info.input_name}' -> '{info.output_name}')")
        if inputs[info.input_name].type != "tensor(uint8)":
            raise ModelFileError(f"{self.source}: input '{info.input_name}' is {inputs[info.input_name].type}, "
                                 "expected tensor(uint8)")
        return info

    # ----------------------------------------------------------------------------------------- facts

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        return self.session.get_providers()

    @property
    def device(self) -> str:
        """'cuda' when the CUDA provider is active, else 'cpu'."""
        return "cuda" if CUDA_EP in self.providers else "cpu"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def node_assignment(self) -> dict[str, list[str]] | None:
        """Which execution provider runs each node of the optimised graph: {provider: ["Conv", ...]}.

        None where this onnxruntime cannot say (before 1.31). A CUDA graph needs every node on CUDA.
        """
        return node_assignment(self.session)

    # ---------------------------------------------------------------------------------------- inputs

    def as_batch(self, images: Any) -> np.ndarray:
        """Convert images to the model's uint8 [N, C, H, W] batch, or raise InputError saying what is wrong.

        Accepts a uint8 HxW image, NxHxW, NxCxHxW, a list of such, or floats in [0, 1].
        """
        x = images
        if isinstance(x, (list, tuple)):
            if not x:
                raise InputError("empty batch: got an empty list of images")
            if all(isinstance(i, np.ndarray) for i in x):
                return np.concatenate([self.as_batch(i) for i in x])
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        if x.dtype == object:
            raise InputError("images have ragged or non-numeric content; expected equal-sized pixel arrays")
        c, h, w = self._expected
        if x.ndim == 2:
            x = x[None, None]
        elif x.ndim == 3:
            # NxHxW for a one-channel model; otherwise a single CxHxW image
            x = x[:, None] if c == 1 and x.shape[1:] == (h, w) else x[None]
        elif x.ndim != 4:
            raise InputError(f"images of rank {x.ndim} (shape {x.shape}); expected HxW, NxHxW or Nx{c}xHxW")
        if x.shape[0] == 0:
            raise InputError(f"empty batch: got shape {x.shape}")
        if x.shape[1:] != self._expected:
            raise InputError(f"images of shape {tuple(x.shape[1:])}; expected {c}x{h}x{w} "
                             f"(this model takes {h}x{w} {'grayscale' if c == 1 else f'{c}-channel'} images)")
        return np.ascontiguousarray(self._to_uint8(x))

    @staticmethod
    def _to_uint8(x: np.ndarray) -> np.ndarray:
        if x.dtype == np.uint8:
            return x
        if x.dtype == np.bool_:
            raise InputError("images are boolean; expected uint8 pixels 0..255 or floats in [0, 1]")
        if np.issubdtype(x.dtype, np.floating):
            if not np.isfinite(x).all():
                raise InputError("images contain NaN or inf")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise InputError(f"float images must be in [0, 1], got values in [{lo:g}, {hi:g}]; "
                                 "pass uint8 for 0..255 pixels")
            return np.rint(x * 255.0).astype(np.uint8)
        if np.issubdtype(x.dtype, np.integer):
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi > 255:
                raise InputError(f"integer pixels must be in 0..255, got values in [{lo}, {hi}]")
            return x.astype(np.uint8)
        raise InputError(f"images of dtype {x.dtype}; expected uint8 (0..255) or float (0..1)")

    # ------------------------------------------------------------------------------------- inference

    def logits(self, images: Any) -> np.ndarray:
        """Raw float32 logits [N, classes] for `images` (any accepted form), in chunks of `max_batch`."""
        x = images
        # Fast path: a ready uint8 NCHW batch skips conversion (keeps per-call overhead to microseconds).
        if not (type(x) is np.ndarray and x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == self._expected
                and x.shape[0] > 0 and x.flags.c_contiguous):
            x = self.as_batch(x)
        n = x.shape[0]
        if n <= self.max_batch:
            return self.session.run(self._outputs, {self._input: x})[0]
        return np.concatenate([self.session.run(self._outputs, {self._input: x[i : i + self.max_batch]})[0]
                               for i in range(0, n, self.max_batch)])

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
        value = images if isinstance(images, ort.OrtValue) else ort.OrtValue.from_dlpack(images)
        problem = device_input_problem(value, self._expected)
        if problem:
            raise InputError(problem)
        shape = value.shape()
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self._input, value)
        binding.synchronize_inputs()  # the producer's pending writes to `images` complete before we read it
        if out is not None:
            binding.bind_output(self.info.output_name, "cuda", self.device_id, np.float32,
                                [shape[0], self.info.num_classes], out.data_ptr())
        else:
            binding.bind_output(self.info.output_name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return out if out is not None else binding.get_outputs()[0]

    def cuda_graph_runner(self, batch_size: int) -> "CudaGraphRunner":
        """A fixed-shape runner for a session made with `enable_cuda_graph=True`."""
        self._require_cuda("cuda_graph_runner")
        return CudaGraphRunner(self, batch_size)


class CudaGraphRunner:
    """Replays ONNX Runtime's captured CUDA graph: preallocated GPU buffers, inputs updated in place."""

    def __init__(self, clf: Classifier, batch_size: int):
        c, h, w = clf._expected
        self.clf = clf
        self.batch_size = batch_size
        self.input = ort.OrtValue.ortvalue_from_shape_and_type((batch_size, c, h, w), np.uint8, "cuda", clf.device_id)
        self.output = ort.OrtValue.ortvalue_from_shape_and_type((batch_size, clf.info.num_classes), np.float32,
                                                                "cuda", clf.device_id)
        self.binding = clf.session.io_binding()
        self.binding.bind_ortvalue_input(clf._input, self.input)
        self.binding.bind_ortvalue_output(clf.info.output_name, self.output)
        self._lock = threading.Lock()

    def run(self, images: np.ndarray) -> np.ndarray:
        """Copy a host uint8 batch of exactly `batch_size` images in, replay, return host logits."""
        x = self.clf.as_batch(images)
        if x.shape[0] != self.batch_size:
            raise InputError(f"this CUDA graph was captured for batch {self.batch_size}, got {x.shape[0]}")
        with self._lock:
            self.input.update_inplace(x)
            self.clf.session.run_with_iobinding(self.binding)
            return self.output.numpy()

    def replay(self) -> None:
        """Replay on whatever is in the bound input buffer (for device-time benchmarks)."""
        self.clf.session.run_with_iobinding(self.binding)


def device_input_problem(value: ort.OrtValue, expected: tuple[int, int, int]) -> str | None:
    """Why `value` cannot be a device batch [N, *expected] of uint8 on CUDA, or None when it can."""
    # OrtValue.data_type() is "tensor(uint8)"; element_type() is the ONNX type number, not a numpy type.
    dtype = value.data_type()
    shape = list(value.shape())
    device = value.device_name().lower()
    if device != "cuda" or dtype != "tensor(uint8)" or len(shape) != 4 or tuple(shape[1:]) != tuple(expected) \
            or shape[0] < 1:
        want = ", ".join(map(str, expected))
        got = dtype.removeprefix("tensor(").removesuffix(")")
        return f"device input must be a CUDA uint8 tensor [N, {want}], got {got} {shape} on {device}"
    return None


def node_assignment(session: ort.InferenceSession) -> dict[str, list[str]] | None:
    """{execution provider: op types of the nodes it runs}, from a session made by `session_options`."""
    get = getattr(session, "get_provider_graph_assignment_info", None)
    if get is None:
        return None
    try:
        subgraphs = get()
    except Exception:  # recording was not enabled for this session
        return None
    out: dict[str, list[str]] = {}
    for sg in subgraphs:
        out.setdefault(sg.ep_name, []).extend(n.op_type for n in sg.get_nodes())
    return out


def predictions(probs: np.ndarray, classes: Sequence[str], top_k: int = 1) -> list[Prediction]:
    """Probabilities [N, classes] -> one Prediction per row, with the `top_k` most probable classes."""
    k = max(1, min(int(top_k), probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out = []
    for row, idx in zip(probs, order):
        top = tuple((classes[j], float(row[j])) for j in idx)
        out.append(Prediction(int(idx[0]), classes[idx[0]], float(row[idx[0]]), top))
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z

