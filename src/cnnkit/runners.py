"""Benchmark backends. Each runner owns a model on a device and makes a zero-argument `step` for a batch
size, with the input already prepared (and on the device), so only inference is timed."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

BACKENDS = ("eager", "torchscript", "onnx", "compile", "eager-cudagraph", "onnx-cudagraph")
CUDA_ONLY = ("eager-cudagraph", "onnx-cudagraph")


@dataclass
class Runner:
    name: str
    ran_on: str  # what really executes, e.g. "torch cpu", "CUDAExecutionProvider"
    make_step: Callable[[np.ndarray], Callable[[], object]]
    fell_back: bool = False
    nodes: dict[str, list[str]] | None = None  # ONNX Runtime: execution provider -> op types it runs


def _torch_step(module, device):
    import torch

    def make(x: np.ndarray):
        xt = torch.from_numpy(x).to(device)

        def step():
            with torch.inference_mode():
                return module(xt)

        return step

    return make


def eager(module, device) -> Runner:
    return Runner("eager", f"torch {device.type}", _torch_step(module, device))


def torchscript(path, device) -> Runner:
    from cnnkit.export import load_torchscript

    module, _ = load_torchscript(path, map_location=device)
    return Runner("torchscript", f"torch.jit {device.type}", _torch_step(module, device))


def compiled(module, device) -> Runner:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = torch.compile(module, dynamic=False)
    return Runner("compile", f"torch.compile {device.type}", _torch_step(fn, device))


def _torch_stream(device) -> int | None:
    """torch's current CUDA stream handle: ONNX Runtime runs on it, so CUDA events time its work too."""
    import torch

    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None


def onnx(path, device, threads: int | None, tf32: bool = False) -> Runner:
    from cnnkit.runtime import CUDA_EP, Classifier, ProviderFallbackWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProviderFallbackWarning)  # recorded as fell_back instead
        clf = Classifier(path, device=device.type, intra_op_threads=threads, max_batch=1 << 20, tf32=tf32,
                         compute_stream=_torch_stream(device))
    fell_back = device.type == "cuda" and CUDA_EP not in clf.providers
    if device.type != "cuda" or fell_back:
        def make(x: np.ndarray):
            return lambda: clf.logits(x)

        return Runner("onnx", clf.providers[0], make, fell_back, clf.node_assignment)

    import torch

    def make_cuda(x: np.ndarray):
        # IO binding: input and output stay on the GPU, so no host copies are timed.
        xt = torch.from_numpy(x).to(device)
        out = torch.empty(len(x), clf.info.num_classes, device=device)
        return lambda: clf.logits_on_device(xt, out=out)

    return Runner("onnx", clf.providers[0], make_cuda, nodes=clf.node_assignment)


def eager_cudagraph(module, device) -> Runner:
    import torch

    def make(x: np.ndarray):
        static_x = torch.from_numpy(x).to(device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up kernels/cuDNN before capture, as the CUDA graph docs require
                module(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = module(static_x)
        return lambda: (graph.replay(), static_out)[1]

    return Runner("eager-cudagraph", "torch cuda graph", make)


def onnx_cudagraph(path, device, tf32: bool = False) -> Runner:
    from cnnkit.errors import DeviceError
    from cnnkit.runtime import CUDA_EP, Classifier, ProviderFallbackWarning

    def session():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProviderFallbackWarning)
            return Classifier(path, device="cuda", enable_cuda_graph=True, tf32=tf32,
                              compute_stream=_torch_stream(device))

    clf = session()
    if CUDA_EP not in clf.providers:
        raise DeviceError(f"a CUDA graph needs ONNX Runtime's CUDA provider, which did not load: {clf.fallback_reason}")

    def make(x: np.ndarray):
        # One session captures one graph (one shape): a fresh session per batch size.
        runner = session().cuda_graph_runner(len(x))
        runner.run(x)  # copies the input in and captures the graph
        return runner.replay

    return Runner("onnx-cudagraph", "CUDAExecutionProvider (cuda graph)", make, nodes=clf.node_assignment)


@contextlib.contextmanager
def torch_threads(n: int | None):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
