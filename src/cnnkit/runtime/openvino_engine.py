"""OpenVINO as a runtime engine (the `openvino` extra): the same .onnx file, read by OpenVINO's ONNX frontend and
compiled for the CPU with an explicit float precision, so it never runs bf16 unless asked (OpenVINO's own default on
CPUs with AMX or AVX512-BF16 is bf16). Imported only when the openvino engine is asked for."""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

import numpy as np

from cnnkit import contract
from cnnkit.errors import DeviceError, MissingExtraError, ModelFileError, first_line
from cnnkit.runtime.facts import ModelFacts, Tensor, read_info
from cnnkit.runtime.options import EngineChoice
from cnnkit.runtime.streams import Streams

OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # cnnkit's names -> OpenVINO's INFERENCE_PRECISION_HINT
FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
INSTALL = "pip install 'cnnkit[openvino]'"


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def capabilities(core: Any = None) -> list[str]:
    """OpenVINO's CPU optimisation capabilities here (FP32, INT8, BF16, ...), or [] without OpenVINO."""
    if core is None:
        if not available():
            return []
        import openvino as ov

        core = ov.Core()
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def _tensor(port: Any) -> Tensor:
    dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    return Tensor(np.dtype(port.get_element_type().to_dtype()).name, dims)


def _facts(m: Any) -> ModelFacts:
    """The cnnkit metadata (OpenVINO keeps an ONNX file's metadata_props under rt_info "framework") and tensors."""
    meta: dict[str, str] = {}
    if m.has_rt_info(["framework", contract.KEY]):
        meta[contract.KEY] = m.get_rt_info(["framework", contract.KEY]).astype(str)
    return ModelFacts(
        metadata=meta,
        inputs={n: _tensor(p) for p in m.inputs for n in p.get_names()},
        outputs={n: _tensor(p) for p in m.outputs for n in p.get_names()},
    )


class OpenVinoEngine:
    """The model compiled by OpenVINO for the CPU (an `Engine`); `run(x)` gives float32 logits for a uint8 batch."""

    name = "openvino"

    def __init__(self, data: bytes, source: str, choice: EngineChoice, threads: int | None):
        if not available():
            raise MissingExtraError(f"the openvino engine needs OpenVINO, which is not installed: {INSTALL}")
        import openvino as ov

        core = ov.Core()
        caps = capabilities(core)
        if choice.precision == "bf16" and "BF16" not in caps:
            raise DeviceError(
                f"bf16 needs a CPU with AVX512-BF16 or AMX; OpenVINO finds only {', '.join(caps)} here: use fp32"
            )
        try:
            model = core.read_model(data)
        except Exception as exc:  # OpenVINO raises RuntimeError / its own GeneralFailure for unreadable models
            raise ModelFileError(f"{source}: OpenVINO cannot read this model ({_reason(exc)})") from None
        props: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OV_PRECISIONS[choice.precision],
            "INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1),
        }
        if choice.requests > 1:  # several callers' batches at once, one stream each
            props["PERFORMANCE_HINT"] = "THROUGHPUT"
            props["NUM_STREAMS"] = choice.requests
        elif choice.streams > 1:
            props["NUM_STREAMS"] = choice.streams
        else:
            props["PERFORMANCE_HINT"] = "LATENCY"
        try:
            self._compiled = core.compile_model(model, "CPU", props)
        except Exception as exc:
            raise ModelFileError(f"{source}: OpenVINO cannot compile this model ({_reason(exc)})") from None
        self.choice = choice
        self._facts = _facts(model)  # read now: the ov.Model itself is not kept once compiled
        self.info = read_info(self._facts, source)  # the geometry and the one output it runs, chosen here
        self._output = next(i for i, o in enumerate(self._compiled.outputs) if self.info.output_name in o.get_names())
        self.run: Streams | InFlight
        if choice.requests > 1 or choice.streams > 1:  # OpenVINO's own async requests, no thread pool of ours
            n = max(choice.requests, choice.streams)
            self.run = InFlight(self._compiled, n, self._output, split=choice.streams > 1)
        else:
            self.run = Streams([self._runner(self._compiled.create_infer_request())])

    def _runner(self, request: Any) -> Any:
        import openvino as ov

        def run(x: np.ndarray) -> np.ndarray:
            # the batch is read in place (a C-contiguous uint8 array, alive for the call); the logits are copied out.
            # OpenVINO shares only writable memory: a read-only batch (a V2 binary body, np.frombuffer) is copied.
            x = _shareable(x)
            request.set_input_tensor(ov.Tensor(x, shared_memory=True))
            request.infer()
            out: np.ndarray = request.get_output_tensor(self._output).data.copy()
            return out

        return run

    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def providers(self) -> list[str]:
        return ["OpenVINO CPU"]

    @property
    def precision(self) -> str:
        """The float precision OpenVINO compiled the model with, as it reports it."""
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        name = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        return FROM_OV.get(name, name)


def _shareable(x: np.ndarray) -> np.ndarray:
    """`x` as OpenVINO can read it in place: C-contiguous and writable (it shares only writable memory), else a copy."""
    return x if x.flags.c_contiguous and x.flags.writeable else np.array(x, order="C")


class _Slot:
    """One caller's batch in flight: its logits (or error) and the event that says they are there."""

    __slots__ = ("done", "error", "out")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.out: np.ndarray | None = None
        self.error: BaseException | None = None


class InFlight:
    """`run(x)`, thread-safe: the batch starts on an idle infer request of OpenVINO's AsyncInferQueue (waiting for
    one while all N are busy) and the caller waits for its own logits, so up to N callers' batches run at once.
    With `split` (streams), each batch is cut into up to N near-equal parts started at once, its rows put back in
    order."""

    def __init__(self, compiled: Any, n: int, output: int, split: bool = False):
        import openvino as ov

        self._queue = ov.AsyncInferQueue(compiled, n)
        self._queue.set_callback(self._finished)
        self._output = output
        self._submit = threading.Lock()  # start_async picks the idle request: one caller at a time picks
        self.size = n
        self._split = split

    def __len__(self) -> int:
        return self.size

    def _finished(self, request: Any, slot: _Slot) -> None:
        try:
            slot.out = request.get_output_tensor(self._output).data.copy()
        except BaseException as exc:  # handed to the caller, which raises it
            slot.error = exc
        finally:
            slot.done.set()

    def _start(self, x: np.ndarray) -> _Slot:
        slot = _Slot()
        with self._submit:
            self._queue.start_async({0: x}, slot, share_inputs=True)  # x stays alive: its caller waits for it
        return slot

    @staticmethod
    def _wait(slot: _Slot) -> np.ndarray:
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.out is not None
        return slot.out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _shareable(x)
        k = min(self.size, len(x)) if self._split else 1
        if k <= 1:
            return self._wait(self._start(x))
        parts = np.array_split(x, k)  # views of x: contiguous and writable as it is
        slots = [self._start(p) for p in parts]
        return np.concatenate([self._wait(s) for s in slots])


def _reason(exc: BaseException) -> str:
    """OpenVINO's message without its 'Exception from <source file>' lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
    return lines[0] if lines else first_line(exc)
