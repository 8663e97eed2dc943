"""`Classifier`: an exported cnnkit model in ONNX Runtime or OpenVINO. Imports numpy and onnxruntime (and OpenVINO
when it is asked for) only."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from cnnkit.errors import CnnkitError, DeviceError, InferenceError, ModelFileError, first_line, option_error
from cnnkit.runtime import cuda, gates, plan, session
from cnnkit.runtime.engine import Engine
from cnnkit.runtime.inputs import InputSpec
from cnnkit.runtime.options import CudaOptions, EngineChoice
from cnnkit.runtime.ort_engine import OrtEngine
from cnnkit.runtime.predictions import Prediction, predictions, softmax
from cnnkit.spec import DEVICES, ENGINES

Fallback = Literal["warn", "raise", "ignore"]
FALLBACKS = ("warn", "raise", "ignore")


def strict_fallback(device: str) -> Fallback:
    """The commands' one rule for `device`: "cuda" asked for is CUDA or an error ("raise"); "auto" and "cpu" run
    wherever they can ("ignore")."""
    return "raise" if device == "cuda" else "ignore"


class ProviderFallbackWarning(RuntimeWarning):
    """CUDA was asked for but ONNX Runtime runs the model on the CPU."""


class Classifier:
    """A cnnkit ONNX model in an inference engine, ready for thread-safe batch inference.

    Args:
        model: path to the .onnx file, or its bytes.
        device: "cpu", "cuda" (CUDA provider, CPU for what it cannot run) or "auto" (CUDA where a GPU is visible).
        engine: "onnxruntime", "openvino" (the `openvino` extra; CPU only), an `EngineChoice` (engine, streams,
            float precision), or "auto": on the CPU, what `cnnkit optimize` measured fastest at each batch size for
            this file on this CPU (`runtime.json` beside it; see `plan`), else ONNX Runtime.
        fallback: what happens when CUDA was asked for and ONNX Runtime runs on the CPU instead: "warn"
            (a ProviderFallbackWarning, once), "raise" (DeviceError) or "ignore" (read `fallback_reason`).
        intra_op_threads: CPU threads per inference, shared by the streams (default: one per core).
        max_batch: larger inputs are run in chunks of this many images.
        cuda: ONNX Runtime's CUDA provider options (`CudaOptions`: TF32, CUDA graph, device, stream).
        serving: the model serves concurrent callers within a larger process, as `cnnkit serve` does: ONNX
            Runtime's CPU threads sleep between calls instead of spinning (leaving the cores to the event loop and
            the decoders, and to OpenVINO where a plan runs both: spinning threads slow its next batch), and
            engine "auto" runs what `optimize` measured fastest with batches in flight (OpenVINO's THROUGHPUT mode,
            where it won); `in_flight` says how many batches to keep running at once. False (the default): one
            caller's lowest latency, threads spinning between back-to-back calls.
        trust_int8: run an INT8 file whose accuracy gate was recorded (exports.json beside it) only on CPUs with
            other instruction-set flags than this one; by default that is a ModelFileError saying how to re-check it
            here (`runtime.gates`). The checking tools (verify, bench, evaluate) pass True: they judge, not trust.

    Raises:
        ModelFileError: the file is missing, not ONNX, or not a cnnkit model; an INT8 file not gated on this CPU.
        DeviceError: an unknown device, a CUDA fall-back with `fallback="raise"`, OpenVINO asked to run on CUDA,
            or bf16 on a CPU without it.
        MissingExtraError: engine "openvino" without OpenVINO installed.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        device: str = "auto",
        *,
        engine: str | EngineChoice = "auto",
        fallback: Fallback = "warn",
        intra_op_threads: int | None = None,
        max_batch: int = 256,
        cuda: CudaOptions = CudaOptions(),
        serving: bool = False,
        trust_int8: bool = False,
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
        self.device_id = cuda.device_id
        self.cuda_options = cuda
        want_cuda = device == "cuda" or (
            device == "auto" and session.gpu_visible() and session.CUDA_EP in ort.get_available_providers()
        )
        #: the engine choice for each batch size, and where it came from
        self.plan = _engine_plan(model, engine, want_cuda, serving)
        if want_cuda and any(c.engine != "onnxruntime" for c in self.plan.choices):
            raise option_error(DeviceError, "engine", "openvino", "runs on the CPU only; for CUDA use onnxruntime")
        self._engines: dict[EngineChoice, Engine] = {
            c: _open(data, self.source, c, want_cuda, (intra_op_threads, not serving), cuda) for c in self.plan.choices
        }
        first = next(iter(self._engines.values()))
        ort_engine = next((e for e in self._engines.values() if isinstance(e, OrtEngine)), None)
        #: the ONNX Runtime session (None when only OpenVINO runs the model)
        self.session = ort_engine.session if ort_engine is not None else None
        self.info = first.info
        if not trust_int8 and not isinstance(model, (bytes, bytearray, memoryview)):
            untrusted = gates.problem(Path(model), self.info.precision, [c.engine for c in self.plan.choices])
            if untrusted:
                raise ModelFileError(untrusted)
        self._runs = [self._engines[c].run for _, c in self.plan.routes]
        self.input_spec = InputSpec(
            name=self.info.input_name,
            channels=self.info.channels,
            height=self.info.geometry.height,
            width=self.info.geometry.width,
        )
        #: why CUDA was asked for but ONNX Runtime runs on the CPU (None when it runs as asked)
        self.fallback_reason: str | None = ort_engine.fallback_reason if ort_engine is not None else None
        reason = self.fallback_reason
        if reason and device == "cuda" and fallback != "ignore":
            if fallback == "raise":
                raise DeviceError(self.fallback_message)
            warnings.warn(self.fallback_message or reason, ProviderFallbackWarning, stacklevel=2)

    # ----------------------------------------------------------------------------------------- facts

    @property
    def providers(self) -> list[str]:
        """What really runs the model: ONNX Runtime's execution providers in priority order, or 'OpenVINO CPU'
        (both, for a plan that uses both engines)."""
        return list(dict.fromkeys(p for e in self._engines.values() for p in e.providers))

    @property
    def engine(self) -> str:
        """The engine(s) that run the model: 'onnxruntime', 'openvino', or both joined by '+'."""
        return "+".join(dict.fromkeys(c.engine for c in self._engines))

    @property
    def precision(self) -> str:
        """The float precision the engines really compute in (as they report it; an INT8 file's quantized layers
        run in INT8 whatever this says)."""
        return "+".join(dict.fromkeys(e.precision for e in self._engines.values()))

    def runs_on(self) -> list[dict[str, object]]:
        """The plan as data: from which batch size which engine, streams and precision run, and what runs."""
        return [
            {"from_batch": size, **c.to_dict(), "precision_run": self._engines[c].precision, "label": c.label}
            for size, c in self.plan.routes
        ]

    @property
    def in_flight(self) -> int:
        """How many batches the engines run at once from concurrent callers (OpenVINO's infer requests in
        THROUGHPUT mode); 1: one at a time is all the engine gains from."""
        return max(c.requests for c in self._engines)

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
        return f"CUDA was requested but ONNX Runtime runs on CPU: {self.fallback_reason}. Fix: {session.cuda_fix()}"

    @property
    def node_assignment(self) -> dict[str, list[str]] | None:
        """Which execution provider runs each node of the optimised graph: {provider: ["Conv", ...]}.

        None where this onnxruntime cannot say (before 1.31). A CUDA graph needs every node on CUDA.
        """
        return session.node_assignment(self.session) if self.session is not None else None

    # ------------------------------------------------------------------------------------- inference

    def as_batch(self, images: Any) -> np.ndarray:
        """The model's uint8 [N, C, H, W] batch for `images` (see `InputSpec.batch`), or InputError."""
        return self.input_spec.batch(images)

    def logits(self, images: Any) -> np.ndarray:
        """Raw float32 logits [N, classes] for `images` (any accepted form), in chunks of `max_batch`."""
        # Fast path: a ready uint8 NCHW batch skips conversion (keeps per-call overhead to microseconds).
        x = images if self.input_spec.is_ready(images) else self.input_spec.batch(images)
        n = x.shape[0]
        if n <= self.max_batch:
            return self._run(x)
        return np.concatenate([self._run(x[i : i + self.max_batch]) for i in range(0, n, self.max_batch)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            if len(self._runs) == 1:
                return np.asarray(self._runs[0](x))
            return np.asarray(self._runs[self.plan.route(len(x))](x))
        except CnnkitError:
            raise
        except Exception as exc:  # the engine's own error types, with multi-line C++ messages
            raise InferenceError(f"{self.source}: the model failed on a batch of {len(x)}: {first_line(exc)}") from None

    def probabilities(self, images: Any) -> np.ndarray:
        """Softmax probabilities [N, classes]."""
        return softmax(self.logits(images))

    def predict(self, images: Any, top_k: int = 1) -> list[Prediction]:
        """One Prediction per image, with the `top_k` most probable classes."""
        return predictions(self.probabilities(images), self.info.classes, top_k)

    # ------------------------------------------------------------------------------ CUDA, IO binding

    def _require_cuda(self, what: str) -> None:
        if self.device != "cuda" or self.session is None:
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
        """A fixed-shape runner for a session made with `cuda=CudaOptions(cuda_graph=True)`: each run replays
        the graph ONNX Runtime captured on the first one (a `device_runner` on such a session)."""
        self._require_cuda("cuda_graph_runner")
        if not self.cuda_options.cuda_graph:
            raise DeviceError("cuda_graph_runner needs a session made with cuda=CudaOptions(cuda_graph=True)")
        return self.device_runner(batch_size)

    def _io(self) -> cuda.ModelIO:
        assert self.session is not None  # _require_cuda
        return cuda.ModelIO(self.session, self.input_spec, self.info.output_name, self.info.num_classes, self.device_id)


def _engine_plan(model: Any, engine: str | EngineChoice, want_cuda: bool, serving: bool) -> plan.EnginePlan:
    if isinstance(engine, EngineChoice):
        return plan.EnginePlan(routes=((1, engine),), source="asked for")
    if engine == "auto":
        return plan.load(model, "cuda" if want_cuda else "cpu", concurrent=serving)
    if engine not in ENGINES:
        raise CnnkitError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)} or auto")
    return plan.EnginePlan(routes=((1, EngineChoice(engine=engine)),), source="asked for")


def _open(
    data: bytes,
    source: str,
    choice: EngineChoice,
    want_cuda: bool,
    cpu: tuple[int | None, bool],  # (threads, spin)
    cuda_opts: CudaOptions,
) -> Engine:
    threads, spin = cpu
    if choice.engine == "openvino":
        from cnnkit.runtime.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(data, source, choice, threads)
    return OrtEngine(data, source, choice, want_cuda, threads, cuda_opts, spin)
