"""`cnnkit bench`: latency and throughput of eager, TorchScript, ONNX Runtime (and compile, CUDA graphs).

Method: warm-up is excluded (cuDNN autotuning, ORT's conv search, TorchScript profiling, compilation);
GPU work is synchronised per iteration (wall clock end to end, CUDA events for device time where torch runs);
all backends use the same CPU thread count and, on CUDA, the same TF32 setting; backends are alternated in
rounds so drift on a noisy machine hits all of them alike. A backend that fails becomes rows that say why.

Torch is imported only for torch backends or to export a checkpoint on the fly: `--backends onnx` on an .onnx
file runs in a runtime-only install.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench import backends as bk
from cnnkit.bench.env import environment
from cnnkit.bench.results import BenchResult, BenchRow, summarize
from cnnkit.errors import CnnkitError, DeviceError, ModelFileError, first_line

Step = Callable[[], object]


@dataclass
class Inputs:
    """What a bench run measures: a checkpoint (torch backends), ONNX files (one row set each), a TorchScript file."""

    checkpoint: Path | None = None
    onnx: list[Path] = field(default_factory=list)
    torchscript: Path | None = None
    torchscript_named: bool = True  # named by the user, not found in a folder (then exports.json must vouch for it)

    def describe(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "onnx": [str(p) for p in self.onnx],
            "torchscript": str(self.torchscript) if self.torchscript else None,
        }


def resolve_inputs(paths: list[str], need_checkpoint: bool) -> Inputs:
    """Run folders and files -> the checkpoint, every ONNX file given (a folder adds its model.onnx), TorchScript."""
    from cnnkit.atomic import sha256_file
    from cnnkit.contract import FILENAMES
    from cnnkit.export.artifacts import artefact_kind, find_checkpoint, read_info

    found = Inputs()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            ckpt = p / "model.safetensors"
            ckpt_sha = sha256_file(ckpt) if ckpt.is_file() else None
            if ckpt_sha and found.checkpoint is None:
                found.checkpoint = ckpt
            for kind in ("onnx", "torchscript"):
                f = p / FILENAMES[kind]
                if not f.is_file():
                    continue
                try:
                    made_from = read_info(f).checkpoint_sha256
                except CnnkitError:  # unreadable: left to its backend, which reports it as a failed row
                    made_from = ckpt_sha
                if ckpt_sha and made_from != ckpt_sha:  # a folder's files are compared only if they belong together
                    raise ModelFileError(
                        f"{f}: was not exported from {ckpt} (checkpoint SHA-256 {str(made_from)[:12]}... != "
                        f"{ckpt_sha[:12]}...); re-export, or name the files to bench"
                    )
                if kind == "onnx":
                    found.onnx.append(f)
                elif found.torchscript is None:
                    found.torchscript, found.torchscript_named = f, False
        elif not p.is_file():
            raise ModelFileError(f"{p}: not found")
        elif p.suffix == ".safetensors":
            found.checkpoint = p
        elif artefact_kind(p) == "torchscript":
            found.torchscript = p
        else:
            found.onnx.append(p)
    if found.checkpoint is None and not found.onnx and found.torchscript is None:
        raise ModelFileError(f"no checkpoint or exported model in {', '.join(paths)}; pass a run folder")
    if need_checkpoint and found.checkpoint is None:
        artefacts = found.onnx[:1] + ([found.torchscript] if found.torchscript else [])
        found.checkpoint = find_checkpoint(artefacts)
    return found


def onnx_labels(files: list[Path]) -> list[str]:
    """Row names for ONNX files: 'onnx' for one; 'onnx:<variant>' (int8-folded, ...) or 'onnx:<file>' for several."""
    if len(files) == 1:
        return ["onnx"]
    from cnnkit.runtime import Classifier

    variants = []
    for f in files:
        try:
            variants.append(Classifier(f, device="cpu").info.variant)
        except CnnkitError:
            variants.append(f.name)
    if len(set(variants)) < len(variants):
        variants = [f"{v}:{f}" for v, f in zip(variants, files)]
    return [f"onnx:{v}" for v in variants]


def _cuda_events() -> tuple[Callable[[], Any], Callable[[Any], float]]:
    """(start, stop): CUDA events around a step; stop synchronises and returns the device seconds."""
    import torch

    def start() -> Any:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        return e0, e1

    def stop(events: Any) -> float:
        e0, e1 = events
        e1.record()
        torch.cuda.synchronize()
        return float(e0.elapsed_time(e1)) / 1e3

    return start, stop


def _timed(step: Step, count: int | None, budget: float, events: Any = None) -> tuple[list[float], list[float]]:
    """Run `step` `count` times, or for `budget` seconds; per-iteration wall (and CUDA event) seconds."""
    wall: list[float] = []
    dev: list[float] = []
    start_all = time.perf_counter()
    while True:
        ev = events[0]() if events else None
        t0 = time.perf_counter()
        step()
        if events:
            dev.append(events[1](ev))
        wall.append(time.perf_counter() - t0)
        if count is not None:
            if len(wall) >= count:
                break
        elif time.perf_counter() - start_all >= budget:
            break
    return wall, dev


@contextlib.contextmanager
def _torch_context(device: Any, threads: int, tf32: bool) -> Iterator[None]:
    """Same CPU threads for torch; on CUDA one non-default stream that ONNX Runtime shares (ORT ignores handle
    0, torch's default stream) so CUDA events time every backend alike, and TF32 as ONNX Runtime is told."""
    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    cuda = device.type == "cuda"
    old_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
            with torch.cuda.stream(torch.cuda.Stream(device)):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32


def bench(
    paths: list[str],
    device: str = "cpu",
    backends: tuple[str, ...] = ("eager", "torchscript", "onnx"),
    batch_sizes: tuple[int, ...] = (1, 8, 64, 256),
    warmup: int = 10,
    iters: int | None = None,
    min_time: float = 1.5,
    threads: int | None = None,
    rounds: int = 5,
    seed: int = 0,
    tf32: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Benchmark `backends` at each batch size; see the module docstring for the method."""
    unknown = [b for b in backends if b not in bk.BACKENDS]
    if unknown:
        raise CnnkitError(f"unknown backend(s) {unknown}; expected some of {', '.join(bk.BACKENDS)}")
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {device!r}; expected cpu or cuda")
    cuda_only = [b for b in backends if b in bk.CUDA_ONLY]
    if device != "cuda" and cuda_only:
        raise DeviceError(f"{', '.join(cuda_only)} need --device cuda")
    threads = threads or os.cpu_count() or 1
    torch_backends = [b for b in backends if b not in bk.ONNX_BACKENDS]
    files = resolve_inputs(paths, need_checkpoint=bool(torch_backends))
    needs_export = []
    if not files.onnx and any(b in backends for b in bk.ONNX_BACKENDS):
        needs_export.append("onnx")
    if files.torchscript is None and "torchscript" in backends:
        needs_export.append("torchscript")
    if needs_export and files.checkpoint is None:
        raise ModelFileError(
            f"no {' or '.join(needs_export)} file among {', '.join(paths)} and no checkpoint to export one from"
        )
    use_torch = bool(torch_backends or needs_export)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as tmp:
        if use_torch:
            from cnnkit.train.device import resolve_torch_device

            dev = resolve_torch_device(device)
            ctx: contextlib.AbstractContextManager[None] = _torch_context(dev, threads, tf32)
        else:
            dev, ctx = None, contextlib.nullcontext()
        with ctx:
            result_rows, node_assignment = _run(
                files,
                device,
                dev,
                backends,
                batch_sizes,
                warmup,
                iters,
                min_time,
                threads,
                rounds,
                seed,
                tf32,
                needs_export,
                Path(tmp),
                notes,
                progress,
            )
    base = {r.batch_size: r.images_per_s for r in result_rows if r.backend == "eager" and r.images_per_s}
    rows = [
        replace(r, speedup_vs_eager=r.images_per_s / base[r.batch_size])
        if r.batch_size in base and r.images_per_s
        else r
        for r in result_rows
    ]
    for name, ops in node_assignment.items():
        off = {ep: n for ep, n in ops.items() if ep != "CUDAExecutionProvider"}
        if device == "cuda" and off:
            where = ", ".join(f"{ep}: {sorted(set(n))}" for ep, n in off.items())
            notes.append(f"{name}: not every node runs on CUDA ({where})")
    settings = {
        "backends": list(backends),
        "batch_sizes": list(batch_sizes),
        "warmup": warmup,
        "iters": iters,
        "min_time_s": min_time,
        "rounds": rounds,
        "threads": threads,
        "tf32": tf32 if device == "cuda" else None,
        "inputs": files.describe(),
    }
    return BenchResult(device, settings, environment(device, threads), rows, notes, node_assignment)


def _run(
    files: Inputs,
    device: str,
    dev: Any,
    backends: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    warmup: int,
    iters: int | None,
    min_time: float,
    threads: int,
    rounds: int,
    seed: int,
    tf32: bool,
    needs_export: list[str],
    tmp: Path,
    notes: list[str],
    progress: Callable[[str], None] | None,
) -> tuple[list[BenchRow], dict[str, dict[str, list[str]]]]:
    ckpt = None
    if files.checkpoint is not None and dev is not None:
        from cnnkit.train import checkpoint

        ckpt = checkpoint.load(files.checkpoint)
    if needs_export:
        from cnnkit.export.exporter import export

        # Export on the fly with the one export function (input spec from the checkpoint); the note says so.
        assert files.checkpoint is not None  # checked by the caller
        made = export(files.checkpoint, tmp, formats=tuple(needs_export), verify=False)
        if "onnx" in made.artefacts:
            files.onnx = [Path(made.artefacts["onnx"])]
        if "torchscript" in made.artefacts:
            files.torchscript = Path(made.artefacts["torchscript"])
        notes += [f"{k} exported from the checkpoint for this run (no file given)" for k in needs_export]
    makers: dict[str, Callable[[], bk.Runner]] = {}
    for b in backends:
        if b == "eager":
            makers[b] = lambda: bk.eager(ckpt, dev)
        elif b == "torchscript":
            makers[b] = lambda: bk.torchscript(files.torchscript, dev, files.torchscript_named)
        elif b == "compile":
            makers[b] = lambda: bk.compiled(ckpt, dev)
        elif b == "eager-cudagraph":
            makers[b] = lambda: bk.eager_cudagraph(ckpt, dev)
        else:  # one row set per ONNX file, side by side: onnx, onnx:int8-folded, onnx-cudagraph:int8-folded, ...
            for label, path in zip(onnx_labels(files.onnx), files.onnx):
                key = label.replace("onnx", b, 1)
                if b == "onnx":
                    makers[key] = functools.partial(bk.onnx, path, device, threads, tf32, dev, key)
                else:
                    makers[key] = functools.partial(bk.onnx_cudagraph, path, tf32, dev, key)
    names = list(makers)
    active: dict[str, bk.Runner] = {}
    broken: dict[str, str] = {}  # backend -> why it could not be set up
    for b, make in makers.items():
        try:
            active[b] = make()
        except Exception as exc:  # one backend's failure must not cost the others' results
            broken[b] = f"{type(exc).__name__}: {first_line(exc)}"
            if progress:
                progress(f"{b}: FAILED ({broken[b]})")
    node_assignment = {r.name: r.nodes for r in active.values() if r.nodes is not None}
    notes += [
        f"{r.name}: CUDA requested but ONNX Runtime ran on {r.ran_on}; rows flagged fell_back"
        for r in active.values()
        if r.fell_back
    ]
    shape = (
        (ckpt.meta.config.in_channels, ckpt.meta.config.image_size, ckpt.meta.config.image_size)
        if ckpt
        else bk.onnx_input_shape(files.onnx[0])
    )
    events = _cuda_events() if dev is not None and dev.type == "cuda" else None
    rng = np.random.default_rng(seed)
    rows: list[BenchRow] = []
    for bs in batch_sizes:
        x = rng.integers(0, 256, (bs, *shape), dtype=np.uint8)
        steps: dict[str, Step] = {}
        errors = dict(broken)
        for name, r in active.items():
            if progress:
                progress(f"batch {bs}: warming up {name}")
            try:
                steps[name] = r.make_step(x)
                # Warm-up: count, and at least 0.2 s (lets ORT/cuDNN/TorchScript settle).
                _timed(steps[name], warmup, 0, events)
                _timed(steps[name], None, 0.2, events)
            except Exception as exc:
                steps.pop(name, None)
                errors[name] = f"{type(exc).__name__}: {first_line(exc)}"
        wall: dict[str, list[float]] = {n: [] for n in steps}
        devt: dict[str, list[float]] = {n: [] for n in steps}
        order = list(steps)
        per_round = max(1, -(-iters // rounds)) if iters else None
        for k in range(rounds):
            for name in order[k % len(order) :] + order[: k % len(order)]:  # rotate who goes first
                if name in errors:
                    continue
                try:
                    w, d = _timed(steps[name], per_round, min_time / rounds, events)
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {first_line(exc)}"
                    continue
                wall[name] += w
                devt[name] += d
        for name in names:
            runner = active.get(name)
            ran_on, fell_back = (runner.ran_on, runner.fell_back) if runner else ("-", False)
            if name in errors:
                rows.append(BenchRow(name, bs, ran_on, None, None, fell_back=fell_back, error=errors[name]))
                continue
            st = summarize(wall[name])
            rows.append(
                BenchRow(
                    name,
                    bs,
                    ran_on,
                    st,
                    bs / (st.mean_ms / 1e3),
                    summarize(devt[name]) if devt[name] else None,
                    None,
                    fell_back,
                )
            )
        if progress:
            progress(
                f"batch {bs}: "
                + ", ".join(
                    f"{rw.backend} " + (f"{rw.images_per_s:,.0f} img/s" if rw.images_per_s else "FAILED")
                    for rw in rows
                    if rw.batch_size == bs
                )
            )
    return rows, node_assignment
