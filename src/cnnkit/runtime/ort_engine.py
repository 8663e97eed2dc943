"""ONNX Runtime as a runtime engine: one session, or N single-stream sessions that split each batch (`streams`).
Imports onnxruntime only."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

from cnnkit.errors import DeviceError
from cnnkit.runtime import session
from cnnkit.runtime.facts import ModelFacts, Tensor, read_info
from cnnkit.runtime.options import CudaOptions, EngineChoice
from cnnkit.runtime.streams import Streams

ORT_TYPES = {"float": "float32", "double": "float64"}


def _tensor(arg: Any) -> Tensor:
    name = str(arg.type).removeprefix("tensor(").removesuffix(")")
    return Tensor(ORT_TYPES.get(name, name), list(arg.shape or []))


class OrtEngine:
    """The model in ONNX Runtime (an `Engine`); `run(x)` gives float32 logits for a uint8 batch. Its `session` (the
    first stream's) is what IO binding and CUDA graphs run on; `fallback_reason` says why CUDA was asked for and
    not given (None when it was, or was not asked for)."""

    name = "onnxruntime"

    def __init__(
        self,
        data: bytes,
        source: str,
        choice: EngineChoice,
        want_cuda: bool,
        threads: int | None,
        cuda: CudaOptions,
        spin: bool = True,
    ):
        if want_cuda and choice.streams > 1:
            raise DeviceError("streams split a batch over CPU sessions; on CUDA use one stream")
        per_stream = threads
        if choice.streams > 1:
            per_stream = max(1, (threads or os.cpu_count() or 1) // choice.streams)
        options = session.cuda_provider_options(cuda.device_id, cuda.tf32, cuda.cuda_graph, cuda.compute_stream)
        opened = [
            session.open_session(data, source, want_cuda, per_stream, options, spin) for _ in range(choice.streams)
        ]
        self.choice = choice
        self.session = opened[0].session
        self.fallback_reason = opened[0].fallback_reason
        self._sessions = [o.session for o in opened]
        self.info = read_info(self.facts(), source)  # the geometry and the one output it runs, chosen here
        self._feed = self.info.input_name
        self._outputs = [self.info.output_name]
        # N single-threaded sessions run from cnnkit's threads: ONNX Runtime's own `run_async` needs an intra-op
        # pool with a thread of its own ("intra op thread pool must have at least one thread for RunAsync")
        self.run = (
            Streams([self._runner(s) for s in self._sessions]) if choice.streams > 1 else self._runner(self.session)
        )

    def _runner(self, s: ort.InferenceSession) -> Any:
        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(s.run(self._outputs, {self._feed: x})[0])

        return run

    def facts(self) -> ModelFacts:
        s = self.session
        return ModelFacts(
            metadata=dict(s.get_modelmeta().custom_metadata_map),
            inputs={i.name: _tensor(i) for i in s.get_inputs()},
            outputs={o.name: _tensor(o) for o in s.get_outputs()},
        )

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def precision(self) -> str:
        """ONNX Runtime runs a file's float layers in the file's own float type (fp32 here; fp16 files on CUDA)."""
        return "fp32"
