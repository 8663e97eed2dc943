"""One runner interface for every backend, driven alike by verify (`infer`) and bench (`step`), after Polygraphy's
runners: a runner owns a model on a device and says what really runs it.

Torch runners import torch when they are made; ONNX runners run on the torch-free runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.runtime import Classifier

Step = Callable[[], object]


@dataclass(kw_only=True)
class Runner:
    """A backend ready to run: `infer` maps a host uint8 batch [N,C,H,W] to host float32 logits [N,classes];
    `prepare` makes a zero-argument step on one fixed batch with its input already placed (on the device), so a
    benchmark times inference alone (default: `infer` on that batch)."""

    name: str
    ran_on: str  # what really executes: "torch cpu", "CPUExecutionProvider", "CUDAExecutionProvider (cuda graph)"
    infer: Callable[[np.ndarray], np.ndarray]
    prepare: Callable[[np.ndarray], Step] | None = None
    variant: str = "fp32"  # fp32, fp32-folded, int8-folded, ... (from the model's metadata)
    fell_back: bool = False  # CUDA was asked for, ONNX Runtime runs on the CPU
    fallback_reason: str | None = None
    nodes: dict[str, list[str]] | None = None  # ONNX Runtime: execution provider -> op types of its nodes
    num_classes: int | None = None  # from the model's metadata, where it has some
    in_flight: int = 1  # batches each step runs at once (from as many threads): OpenVINO's requests in flight

    def step(self, x: np.ndarray) -> Step:
        if self.prepare is not None:
            return self.prepare(x)
        return lambda: self.infer(x)


def torch_runner(name: str, module: Any, device: Any, ran_on: str | None = None, variant: str = "fp32") -> Runner:
    """A torch module (eager, TorchScript, compiled) on `device` (a torch.device)."""
    import torch

    from cnnkit.train.model import tensor_from

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = module(tensor_from(x).to(device))
        return y.float().cpu().numpy() if isinstance(y, torch.Tensor) else y

    def prepare(x: np.ndarray) -> Step:
        xt = tensor_from(x).to(device)

        def step() -> object:
            with torch.inference_mode():
                return module(xt)

        return step

    return Runner(name=name, ran_on=ran_on or f"torch {device.type}", infer=infer, prepare=prepare, variant=variant)


def onnx_runner(path: str | Path, device: str, name: str = "onnx", **classifier: Any) -> Runner:
    """An exported ONNX file in the runtime's Classifier (`classifier` options: threads, TF32, CUDA stream, ...).

    A CUDA fall-back is not an error here: `fell_back` and `fallback_reason` say it, and each caller decides.
    """
    return classifier_runner(Classifier(path, device=device, fallback="ignore", trust_int8=True, **classifier), name)


def classifier_runner(clf: Any, name: str = "onnx") -> Runner:
    """A runner on an open runtime Classifier (`prepare` left for the caller to specialise, e.g. IO binding)."""
    ran_on = clf.providers[0] if clf.precision == "fp32" else f"{clf.providers[0]} ({clf.precision})"
    return Runner(
        name=name,
        ran_on=ran_on,
        infer=clf.logits,
        variant=clf.info.variant,
        fell_back=clf.requested_device == "cuda" and clf.device != "cuda",
        fallback_reason=clf.fallback_reason,
        nodes=clf.node_assignment,
        num_classes=clf.info.num_classes,
    )
