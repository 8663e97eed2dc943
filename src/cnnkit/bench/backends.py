"""Benchmark backends as runners (`export.runners.Runner`, the interface verify uses too). Each owns a model on a
device and prepares a zero-argument step for a batch with the input already placed, so only inference is timed.

Torch backends import torch when they are made; the ONNX backends run without it (where torch is in use, ONNX
Runtime shares its CUDA stream so the same CUDA events time both)."""

from __future__ import annotations

import functools
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import DeviceError, ModelFileError
from cnnkit.export.artefacts import load_torchscript
from cnnkit.export.runners import Runner, Step, classifier_runner, torch_runner
from cnnkit.runtime import Classifier, CudaOptions, EngineChoice
from cnnkit.train.checkpoint import deployable

ENGINE_BACKENDS = {  # a backend that runs an .onnx file in the runtime -> its engine choice (streams added per row)
    "onnx": EngineChoice(engine="onnxruntime"),
    "openvino": EngineChoice(engine="openvino"),
    "openvino-bf16": EngineChoice(engine="openvino", precision="bf16"),
}


def _deployable(ckpt: Any, device: Any) -> Any:
    return deployable(ckpt).to(device)


def eager(ckpt: Any, device: Any) -> Runner:
    return torch_runner("eager", _deployable(ckpt, device), device)


def torchscript(path: Path | None, device: Any) -> Runner:
    if path is None:
        raise ModelFileError("no TorchScript file to benchmark")
    module, info = load_torchscript(path, map_location=device)
    return torch_runner("torchscript", module, device, f"torch.jit {device.type}", info.variant)


def pt2(path: Path | None, device: Any, kind: str) -> Runner:
    """A torch.export ExportedProgram (`exported`) or an AOTInductor package (`aoti`) on `device`."""
    from cnnkit.export import torch_formats

    if path is None:
        raise ModelFileError(f"no {kind} .pt2 file to benchmark")
    module, info = torch_formats.load(path, device)
    label = "torch.export" if kind == "exported" else "AOTInductor"
    return torch_runner(kind, module, device, f"{label} {device.type}", info.variant)


def compiled(ckpt: Any, device: Any) -> Runner:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = torch.compile(_deployable(ckpt, device), dynamic=False)
    return torch_runner("compile", fn, device, f"torch.compile {device.type}")


def eager_cudagraph(ckpt: Any, device: Any) -> Runner:
    import torch

    from cnnkit.train.model import tensor_from

    module = _deployable(ckpt, device)

    def prepare(x: np.ndarray) -> Step:
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

    runner = torch_runner("eager-cudagraph", module, device, "torch cuda graph")
    runner.prepare = prepare
    return runner


def _torch_stream(torch_device: Any) -> int | None:
    """torch's current CUDA stream handle: ONNX Runtime runs on it, so CUDA events time its work too."""
    if torch_device is None or torch_device.type != "cuda":
        return None
    import torch

    return int(torch.cuda.current_stream(torch_device).cuda_stream)


def onnx_input_shape(path: Path) -> tuple[int, int, int]:
    """(channels, height, width) from an exported model's own metadata."""
    return Classifier(path, device="cpu", engine="onnxruntime", trust_int8=True).input_spec.image_shape


def onnx(
    path: Path, device: str, threads: int | None, tf32: bool = False, torch_device: Any = None, name: str = "onnx"
) -> Runner:
    """ONNX Runtime; on CUDA with IO binding, so no host copies are timed. A fall-back is a flagged row."""
    clf = Classifier(
        path,
        device=device,
        engine="onnxruntime",
        intra_op_threads=threads,
        max_batch=1 << 20,
        fallback="ignore",
        cuda=CudaOptions(tf32=tf32, compute_stream=_torch_stream(torch_device)),
        trust_int8=True,  # measured, not trusted
    )
    runner = classifier_runner(clf, name)
    if device != "cuda" or runner.fell_back:
        return runner  # each step: clf.logits on the host batch
    if torch_device is None:

        def prepare_bound(x: np.ndarray) -> Step:
            bound = clf.device_runner(len(x))  # buffers on the GPU, bound once
            bound.run(x)
            return bound.replay

        runner.prepare = prepare_bound
        return runner

    from cnnkit.train.model import tensor_from

    def prepare_torch(x: np.ndarray) -> Step:
        import torch

        xt = tensor_from(x).to(torch_device)
        out = torch.empty(len(x), clf.info.num_classes, device=torch_device)
        return lambda: clf.logits_on_device(xt, out=out)

    runner.prepare = prepare_torch
    return runner


def engine(path: Path, choice: EngineChoice, threads: int | None, name: str) -> Runner:
    """An .onnx file on the CPU in one engine choice (OpenVINO, or several streams); what runs is in `ran_on`. With
    requests in flight, each step runs that many batches at once from as many threads, as concurrent callers
    (`cnnkit serve`'s batches) would."""
    clf = Classifier(path, device="cpu", engine=choice, intra_op_threads=threads, max_batch=1 << 20, trust_int8=True)
    runner = classifier_runner(clf, name)
    streams = f", {choice.streams} streams" if choice.streams > 1 else ""
    streams += f", {choice.requests} requests in flight" if choice.requests > 1 else ""
    int8 = "int8 + " if clf.info.variant.startswith("int8") else ""
    runner.ran_on = f"{clf.providers[0]} ({int8}{clf.precision}{streams})"
    if choice.requests > 1:
        runner.in_flight = choice.requests
        runner.prepare = functools.partial(_in_flight, clf.logits, choice.requests)
    return runner


def _in_flight(logits: Any, n: int, x: np.ndarray) -> Step:
    """A step that runs `n` copies of the batch at once: n - 1 from a pool's threads, one from the caller's."""
    pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="cnnkit-bench-caller")

    def step() -> object:
        others = [pool.submit(logits, x) for _ in range(n - 1)]
        out = logits(x)
        return [out, *(f.result() for f in others)]

    weakref.finalize(step, pool.shutdown, wait=False)  # the pool's threads go with the step
    return step


def onnx_cudagraph(path: Path, tf32: bool = False, torch_device: Any = None, name: str = "onnx-cudagraph") -> Runner:
    def session() -> Classifier:
        return Classifier(
            path,
            device="cuda",
            engine="onnxruntime",
            fallback="ignore",
            cuda=CudaOptions(tf32=tf32, cuda_graph=True, compute_stream=_torch_stream(torch_device)),
            trust_int8=True,
        )

    clf = session()
    if clf.device != "cuda":
        raise DeviceError(f"a CUDA graph needs ONNX Runtime's CUDA provider, which did not load: {clf.fallback_reason}")

    def prepare(x: np.ndarray) -> Step:
        # One session captures one graph (one shape): a fresh session per batch size.
        graph = session().cuda_graph_runner(len(x))
        graph.run(x)  # copies the input in and captures the graph
        return graph.replay

    runner = classifier_runner(clf, name)
    runner.ran_on, runner.prepare = "CUDAExecutionProvider (cuda graph)", prepare
    return runner
