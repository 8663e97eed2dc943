"""`cnnkit bench`: latency and throughput of eager, TorchScript, ONNX Runtime (and compile, CUDA graphs), side by
side in one run (the method is `bench.measure`).

Torch is imported only for torch backends or to export a checkpoint on the fly: `--backends onnx` on an .onnx
file runs in a runtime-only install.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench import backends as bk
from cnnkit.bench.env import environment
from cnnkit.bench.inputs import Inputs, file_tags, resolve_inputs
from cnnkit.bench.measure import Measurement, cuda_events, torch_context
from cnnkit.bench.options import ONNX_BACKENDS, PT2_BACKENDS, BenchConfig, row_name
from cnnkit.bench.results import BenchResult, BenchRow
from cnnkit.errors import DeviceError, ModelFileError, first_line, option_error
from cnnkit.export.exporter import ExportOptions, export
from cnnkit.export.runners import Runner
from cnnkit.train import checkpoint
from cnnkit.train.device import resolve_torch_device

__all__ = ["BenchConfig", "bench"]


def bench(
    paths: list[str], config: BenchConfig = BenchConfig(), progress: Callable[[str], None] | None = None
) -> BenchResult:
    """Benchmark `config.backends` on the checkpoint and files in `paths` at each batch size."""
    from cnnkit.runtime import gpu_visible

    if config.device == "cuda" and not gpu_visible():  # the one rule: cuda asked for and not there is an error
        raise option_error(DeviceError, "device", "cuda", "no NVIDIA GPU is visible here (no /dev/nvidia* device)")
    files = resolve_inputs(paths, bool(config.torch_backends), config.trust_torchscript)
    named = tuple(k for k in files.pt2 if k not in config.backends)
    if named:  # a .pt2 file named on the command line is measured, as a named .onnx file is
        config = replace(config, backends=(*config.backends, *named))
    needs_export = _needs_export(files, config, paths)
    use_torch = bool(config.torch_backends or needs_export)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as tmp:
        dev: Any = None
        ctx: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if use_torch:
            dev = resolve_torch_device(config.device)
            ctx = torch_context(dev, config.thread_count, config.tf32)
        with ctx:
            if needs_export:
                notes += _export_missing(files, needs_export, Path(tmp))
            rows, nodes = _run(files, config, dev, notes, progress)
    return BenchResult(
        device=config.device,
        settings=_settings(config, files),
        environment=environment(config.device, config.thread_count),
        rows=_with_speedups(rows),
        notes=notes + _off_cuda_notes(config.device, nodes),
        node_assignment=nodes,
    )


def _needs_export(files: Inputs, config: BenchConfig, paths: list[str]) -> list[str]:
    """The formats a backend needs that no given file supplies (exported from the checkpoint for this run)."""
    needs = []
    if not files.onnx and any(b in config.backends for b in ONNX_BACKENDS):
        needs.append("onnx")
    if files.torchscript is None and "torchscript" in config.backends:
        needs.append("torchscript")
    needs += [k for k in PT2_BACKENDS if k in config.backends and k not in files.pt2]
    if needs and files.checkpoint is None:
        raise ModelFileError(
            f"no {' or '.join(needs)} file among {', '.join(paths)} and no checkpoint to export one from"
        )
    return needs


def _export_missing(files: Inputs, needs_export: list[str], tmp: Path) -> list[str]:
    """Export what is missing with the one export function (input spec from the checkpoint); the notes say so."""
    assert files.checkpoint is not None  # _needs_export refused otherwise
    made = export(files.checkpoint, tmp, ExportOptions(formats=tuple(needs_export), verify=False))
    if "onnx" in made.artefacts:
        files.onnx = [Path(made.artefacts["onnx"])]
    if "torchscript" in made.artefacts:
        files.torchscript = Path(made.artefacts["torchscript"])
    files.pt2.update({k: Path(made.artefacts[k]) for k in PT2_BACKENDS if k in made.artefacts})
    notes = [f"{k} exported from the checkpoint for this run (no file given)" for k in needs_export]
    if "torchscript" in needs_export and files.folder_torchscript is not None:
        notes.append(
            f"{files.folder_torchscript} not loaded: a TorchScript file runs code when loaded; name it, or pass "
            "--trust-torchscript, to benchmark that file"
        )
    return notes


def _makers(files: Inputs, config: BenchConfig, ckpt: Any, dev: Any) -> dict[str, Callable[[], Runner]]:
    """Row name -> how to open its runner; one row set per ONNX file (onnx, onnx:int8-folded, ...)."""
    makers: dict[str, Callable[[], Runner]] = {}
    for b in config.backends:
        if b == "eager":
            makers[b] = functools.partial(bk.eager, ckpt, dev)
        elif b == "torchscript":
            makers[b] = functools.partial(bk.torchscript, files.torchscript, dev)
        elif b in PT2_BACKENDS:
            makers[b] = functools.partial(bk.pt2, files.pt2.get(b), dev, b)
        elif b == "compile":
            makers[b] = functools.partial(bk.compiled, ckpt, dev)
        elif b == "eager-cudagraph":
            makers[b] = functools.partial(bk.eager_cudagraph, ckpt, dev)
        else:
            for tag, path in zip(file_tags(files.onnx), files.onnx):
                makers.update(_file_makers(b, tag, path, config, dev))
    return makers


def _file_makers(b: str, tag: str | None, path: Path, config: BenchConfig, dev: Any) -> dict[str, Callable[[], Runner]]:
    """Row name -> runner maker for one ONNX file in backend `b`: one row per stream count for the engines, and for
    OpenVINO one per number of requests in flight beyond one."""
    if b == "onnx-cudagraph":
        key = row_name(b, tag)
        return {key: functools.partial(bk.onnx_cudagraph, path, config.tf32, dev, key)}
    makers: dict[str, Callable[[], Runner]] = {}
    kind = bk.ENGINE_BACKENDS[b]
    choices = [replace(kind, streams=s) for s in config.streams]
    if kind.engine == "openvino":
        choices += [replace(kind, requests=r) for r in config.requests if r > 1]
    for choice in choices:
        streams = choice.streams
        key = row_name(choice.label, tag)
        if b == "onnx" and streams == 1:  # ONNX Runtime on either device, with IO binding on CUDA
            makers[key] = functools.partial(bk.onnx, path, config.device, config.thread_count, config.tf32, dev, key)
        else:
            makers[key] = functools.partial(bk.engine, path, choice, config.thread_count, key)
    return makers


def _open(
    makers: dict[str, Callable[[], Runner]], progress: Callable[[str], None] | None
) -> tuple[dict[str, Runner], dict[str, str]]:
    """The runners that open, and why the others did not (one backend's failure costs no other its rows)."""
    active: dict[str, Runner] = {}
    broken: dict[str, str] = {}
    for name, make in makers.items():
        try:
            active[name] = make()
        except Exception as exc:
            broken[name] = f"{type(exc).__name__}: {first_line(exc)}"
            if progress:
                progress(f"{name}: FAILED ({broken[name]})")
    return active, broken


def _run(
    files: Inputs, config: BenchConfig, dev: Any, notes: list[str], progress: Callable[[str], None] | None
) -> tuple[list[BenchRow], dict[str, dict[str, list[str]]]]:
    """Open every runner, then measure each batch size; returns the rows and ONNX Runtime's node assignment."""
    ckpt = None
    if files.checkpoint is not None and dev is not None:
        ckpt = checkpoint.load(files.checkpoint)
    makers = _makers(files, config, ckpt, dev)
    active, broken = _open(makers, progress)
    nodes = {r.name: r.nodes for r in active.values() if r.nodes is not None}
    notes += [
        f"{r.name}: CUDA requested but ONNX Runtime ran on {r.ran_on}; rows flagged fell_back"
        for r in active.values()
        if r.fell_back
    ]
    c = ckpt.meta.config if ckpt else None
    shape = (c.in_channels, c.image_size, c.image_size) if c else bk.onnx_input_shape(files.onnx[0])
    events = cuda_events() if dev is not None and dev.type == "cuda" else None
    measure = Measurement(config.warmup, config.iters, config.min_time, config.rounds, events)
    rng = np.random.default_rng(config.seed)
    rows: list[BenchRow] = []
    for bs in config.batch_sizes:
        x = rng.integers(0, 256, (bs, *shape), dtype=np.uint8)
        if progress:
            progress(f"batch {bs}: warming up {', '.join(active) or 'nothing'}")
        batch_rows = measure.rows(x, active, broken, list(makers))
        rows += batch_rows
        if progress:
            progress(f"batch {bs}: " + ", ".join(_summary(r) for r in batch_rows))
    return rows, nodes


def _summary(row: BenchRow) -> str:
    return f"{row.backend} " + (f"{row.images_per_s:,.0f} img/s" if row.images_per_s else "FAILED")


def _with_speedups(rows: list[BenchRow]) -> list[BenchRow]:
    base = {r.batch_size: r.images_per_s for r in rows if r.backend == "eager" and r.images_per_s}
    return [
        replace(r, speedup_vs_eager=r.images_per_s / base[r.batch_size])
        if r.batch_size in base and r.images_per_s
        else r
        for r in rows
    ]


def _off_cuda_notes(device: str, nodes: dict[str, dict[str, list[str]]]) -> list[str]:
    notes = []
    for name, ops in nodes.items():
        off = {ep: n for ep, n in ops.items() if ep != "CUDAExecutionProvider"}
        if device == "cuda" and off:
            where = ", ".join(f"{ep}: {sorted(set(n))}" for ep, n in off.items())
            notes.append(f"{name}: not every node runs on CUDA ({where})")
    return notes


def _settings(config: BenchConfig, files: Inputs) -> dict[str, Any]:
    return {
        "backends": list(config.backends),
        "batch_sizes": list(config.batch_sizes),
        "warmup": config.warmup,
        "iters": config.iters,
        "min_time_s": config.min_time,
        "rounds": config.rounds,
        "threads": config.thread_count,
        "streams": list(config.streams),
        "requests": list(config.requests),
        "tf32": config.tf32 if config.device == "cuda" else None,
        "inputs": files.describe(),
    }
