"""Benchmark backends. Each runner owns a model on a device and makes a zero-argument `step` for a batch,
with the input already prepared (and on the device), so only inference is timed.

Torch backends import torch when they are made; the ONNX backends run without it (where torch is in use,
ONNX Runtime shares its CUDA stream so the same CUDA events time both)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("eager", "torchscript", "onnx", "compile", "eager-cudagraph", "onnx-cudagraph")
CUDA_ONLY = ("eager-cudagraph", "onnx-cudagraph")
ONNX_BACKENDS = ("onnx", "onnx-cudagraph")


@dataclass
class Runner:
    name: str
    ran_on: str  # what really executes, e.g. "torch cpu", "CUDAExecutionProvider"
    make_step: Callable[[np.ndarray], Callable[[], object]]
    fell_back: bool = False
    nodes: dict[str, list[str]] | None = None  # ONNX Runtime: execution provider -> op types it runs


def _torch_step(module: Any, device: Any) -> Callable[[np.ndarray], Callable[[], object]]:
    import torch

    from cnnkit.train.model import tensor_from

    def make(x: np.ndarray) -> Callable[[], object]:
        xt = tensor_from(x).to(device)

        def step() -> object:
            with torch.inference_mode():
                return module(xt)

        return step

    return make


def _deployable(ckpt: Any, device: Any) -> Any:
    from cnnkit.train.checkpoint import deployable

    return deployable(ckpt).to(device)


def eager(ckpt: Any, device: Any) -> Runner:
    return Runner("eager", f"torch {device.type}", _torch_step(_deployable(ckpt, device), device))


def torchscript(path: Path | None, device: Any, named: bool = True) -> Runner:
    from cnnkit.errors import ModelFileError
    from cnnkit.export.artifacts import load_torchscript

    if path is None:
        raise ModelFileError("no TorchScript file to benchmark")

    module, _ = load_torchscript(path, map_location=device, named=named)
    return Runner("torchscript", f"torch.jit {device.type}", _torch_step(module, device))


def compiled(ckpt: Any, device: Any) -> Runner:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = torch.compile(_deployable(ckpt, device), dynamic=False)
    return Runner("compile", f"torch.compile {device.type}", _torch_step(fn, device))


def eager_cudagraph(ckpt: Any, device: Any) -> Runner:
    import torch

    from cnnkit.train.model import tensor_from

    module = _deployable(ckpt, device)

    def make(x: np.ndarray) -> Callable[[], object]:
        static_x = tensor_from(x).to(device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up kernels/cuDNN before capture, as the CUDA graph docs require
                module(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = module(static_x)

        def step() -> object:
            graph.replay()
            return static_out

        return step

    return Runner("eager-cudagraph", "torch cuda graph", make)


def _torch_stream(torch_device: Any) -> int | None:
    """torch's current CUDA stream handle: ONNX Runtime runs on it, so CUDA events time its work too."""
    if torch_device is None or torch_device.type != "cuda":
        return None
    import torch

    return int(torch.cuda.current_stream(torch_device).cuda_stream)


def onnx_input_shape(path: Path) -> tuple[int, int, int]:
    """(channels, height, width) from an exported model's own metadata."""
    from cnnkit.runtime import Classifier

    return Classifier(path, device="cpu").input_spec.image_shape


def onnx(
    path: Path, device: str, threads: int | None, tf32: bool = False, torch_device: Any = None, name: str = "onnx"
) -> Runner:
    """ONNX Runtime; on CUDA with IO binding, so no host copies are timed."""
    from cnnkit.runtime import Classifier

    clf = Classifier(
        path,
        device=device,
        intra_op_threads=threads,
        max_batch=1 << 20,
        tf32=tf32,
        fallback="ignore",
        compute_stream=_torch_stream(torch_device),
    )  # fall-back: a flagged row
    fell_back = device == "cuda" and clf.device != "cuda"
    if device != "cuda" or fell_back:

        def make(x: np.ndarray) -> Callable[[], object]:
            return lambda: clf.logits(x)

        return Runner(name, clf.providers[0], make, fell_back, clf.node_assignment)
    if torch_device is None:

        def make_bound(x: np.ndarray) -> Callable[[], object]:
            runner = clf.device_runner(len(x))  # buffers on the GPU, bound once
            runner.run(x)
            return runner.replay

        return Runner(name, clf.providers[0], make_bound, nodes=clf.node_assignment)

    import torch

    from cnnkit.train.model import tensor_from

    def make_cuda(x: np.ndarray) -> Callable[[], object]:
        xt = tensor_from(x).to(torch_device)
        out = torch.empty(len(x), clf.info.num_classes, device=torch_device)
        return lambda: clf.logits_on_device(xt, out=out)

    return Runner(name, clf.providers[0], make_cuda, nodes=clf.node_assignment)


def onnx_cudagraph(path: Path, tf32: bool = False, torch_device: Any = None, name: str = "onnx-cudagraph") -> Runner:
    from cnnkit.errors import DeviceError
    from cnnkit.runtime import Classifier

    def session() -> Classifier:
        return Classifier(
            path,
            device="cuda",
            enable_cuda_graph=True,
            tf32=tf32,
            fallback="ignore",
            compute_stream=_torch_stream(torch_device),
        )

    clf = session()
    if clf.device != "cuda":
        raise DeviceError(f"a CUDA graph needs ONNX Runtime's CUDA provider, which did not load: {clf.fallback_reason}")

    def make(x: np.ndarray) -> Callable[[], object]:
        # One session captures one graph (one shape): a fresh session per batch size.
        runner = session().cuda_graph_runner(len(x))
        runner.run(x)  # copies the input in and captures the graph
        return runner.replay

    return Runner(name, "CUDAExecutionProvider (cuda graph)", make, nodes=clf.node_assignment)
