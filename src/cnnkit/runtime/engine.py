"""The contract every runtime engine keeps (ONNX Runtime, OpenVINO): opened on a model's bytes, it has read and
checked the model's metadata against its graph (`info`: the input geometry, the classes, the output it runs), and
`run(batch)` turns a uint8 [N, C, H, W] batch into float32 logits [N, classes]. The Classifier types against this
alone. Imports numpy-free, engine-free code only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from cnnkit import contract
from cnnkit.runtime.facts import ModelFacts


class Engine(Protocol):
    #: the engine's name ('onnxruntime', 'openvino')
    name: str
    #: the model's contract as read from this engine's view of the file: geometry, classes, input and output names
    info: contract.ModelInfo

    @property
    def run(self) -> Callable[[Any], Any]:
        """A batch -> its logits (thread-safe; the batch split over streams where the engine choice asks for them)."""
        ...

    def facts(self) -> ModelFacts:
        """What the engine says of the loaded model (metadata, input and output tensors)."""
        ...

    @property
    def providers(self) -> list[str]:
        """What really runs the model ('CPUExecutionProvider', 'OpenVINO CPU', ...)."""
        ...

    @property
    def precision(self) -> str:
        """The float precision the engine really computes in, as it reports it."""
        ...
