"""`cnnkit bench`: latency and throughput of eager, TorchScript, ONNX Runtime (and compile, CUDA graphs).

Method: warm-up is excluded (cuDNN autotuning, ORT's conv search, TorchScript profiling, compilation);
GPU work is synchronised per iteration (wall clock end to end, CUDA events for device time); all
backends use the same CPU thread count; backends are alternated in rounds so drift on a noisy machine
hits all of them alike.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError, DeviceError, ModelFileError


@dataclass(frozen=True)
class Stats:
    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float


def summarize(seconds: list[float] | np.ndarray) -> Stats:
    """Latency statistics (milliseconds) of per-iteration timings given in seconds."""
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    if a.size == 0:
        raise ValueError("no timings to summarize")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return Stats(int(a.size), float(a.mean()), float(p50), float(p90), float(p99), float(a.min()))


@dataclass(frozen=True)
class BenchRow:
    backend: str
    batch_size: int
    ran_on: str
    latency: Stats | None  # None when the backend failed (see `error`)
    images_per_s: float | None  # batch / mean latency
    device_latency: Stats | None = None  # CUDA events, device time only
    speedup_vs_eager: float | None = None
    fell_back: bool = False
    error: str | None = None  # why this backend produced no timing at this batch size


@dataclass(frozen=True)
class BenchResult:
    device: str
    settings: dict
    environment: dict
    rows: list[BenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # ONNX backends: {backend: {execution provider: op types of the nodes it runs}}
    node_assignment: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def failed(self) -> list[BenchRow]:
        return [r for r in self.rows if r.error]

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device, threads: int) -> dict:
    import onnxruntime as ort
    import torch

    import cnnkit

    env = {
        "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "onnxruntime": ort.__version__, "cnnkit": cnnkit.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        from cnnkit.doctor import gpu_info

        g = gpu_info()
        env.update(gpu=torch.cuda.get_device_name(device), gpu_driver=g.get("driver"))
    return env


def resolve_inputs(paths: list[str]) -> dict[str, Path]:
    """Map run folders / files to {'checkpoint', 'onnx', 'torchscript'} paths."""
    from cnnkit.checkpoint import WEIGHTS_NAME
    from cnnkit.export import FILENAMES
    from cnnkit.verify import artefact_kind, find_checkpoint

    found: dict[str, Path] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for key, name in (("checkpoint", WEIGHTS_NAME), ("onnx", FILENAMES["onnx"]),
                              ("torchscript", FILENAMES["torchscript"])):
                if (p / name).is_file():
                    found.setdefault(key, p / name)
        elif not p.is_file():
            raise ModelFileError(f"{p}: not found")
        elif p.suffix == ".safetensors":
            found["checkpoint"] = p
        else:
            found[artefact_kind(p)] = p
    if "checkpoint" not in found:
        arts = [found[k] for k in ("onnx", "torchscript") if k in found]
        if not arts:
            raise ModelFileError(f"no checkpoint or exported model in {', '.join(paths)}; pass a run folder")
        found["checkpoint"] = find_checkpoint(arts)
    return found


def _timed(step, n_or_seconds: tuple[int | None, float], cuda: bool):
    """Run `step` for a fixed count or a time budget; per-iteration wall (and CUDA event) times."""
    import torch

    count, budget = n_or_seconds
    wall, dev = [], []
    start_all = time.perf_counter()
    while True:
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
        t0 = time.perf_counter()
        step()
        if cuda:
            e1.record()
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        if cuda:
            dev.append(e0.elapsed_time(e1) / 1e3)
        if count is not None:
            if len(wall) >= count:
                break
        elif time.perf_counter() - start_all >= budget:
            break
    return wall, dev


def _why(exc: BaseException) -> str:
    """A failure as one line: the exception type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@contextlib.contextmanager
def _tf32(cuda: bool, allow: bool):
    """TF32 for torch's matmuls and cuDNN convolutions, as ONNX Runtime's CUDA provider is told (`use_tf32`)."""
    import torch

    if not cuda:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def bench(paths: list[str], device: str = "cpu", backends: tuple[str, ...] = ("eager", "torchscript", "onnx"),
          batch_sizes: tuple[int, ...] = (1, 8, 64, 256), warmup: int = 10, iters: int | None = None,
          min_time: float = 1.5, threads: int | None = None, rounds: int = 5, seed: int = 0, tf32: bool = False,
          progress=None) -> BenchResult:
    """Benchmark `backends` at each batch size; see the module docstring for the method.

    A backend that fails (to load, to capture, at one batch size) becomes rows with `error` set; the others run.
    On CUDA, TF32 is off for every backend unless `tf32` (torch and ONNX Runtime alike).
    """
    import torch

    from cnnkit import checkpoint, metadata, runners
    from cnnkit.device import resolve_torch_device
    from cnnkit.export import deployable, to_onnx, to_torchscript

    dev = resolve_torch_device(device)
    cuda = dev.type == "cuda"
    unknown = [b for b in backends if b not in runners.BACKENDS]
    if unknown:
        raise CnnkitError(f"unknown backend(s) {unknown}; expected some of {', '.join(runners.BACKENDS)}")
    if not cuda and any(b in runners.CUDA_ONLY for b in backends):
        raise DeviceError(f"{', '.join(b for b in backends if b in runners.CUDA_ONLY)} need --device cuda")
    threads = threads or os.cpu_count() or 1
    files = resolve_inputs(paths)
    ckpt = checkpoint.load(files["checkpoint"])
    notes = []
    generated = set()
    # On CUDA everything runs on one non-default stream that ONNX Runtime shares (user_compute_stream; ORT
    # ignores handle 0, torch's default stream), so CUDA events time every backend's device work alike.
    stream = torch.cuda.stream(torch.cuda.Stream(dev)) if cuda else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as tmp, runners.torch_threads(threads), stream, \
            _tf32(cuda, tf32):
        module = deployable(ckpt).to(dev)
        if cuda:
            torch.backends.cudnn.benchmark = True
        needs = {"onnx": ("onnx", "onnx-cudagraph"), "torchscript": ("torchscript",)}
        for kind, users in needs.items():
            if kind not in files and any(b in backends for b in users):
                # Export on the fly so `cnnkit bench CHECKPOINT` works; the note says so.
                meta = metadata.build(ckpt.meta, str(ckpt.path), ckpt.sha256, checkpoint.versions())
                files[kind] = Path(tmp) / f"model.{kind}"
                if kind == "onnx":
                    to_onnx(deployable(ckpt), torch.zeros(2, 1, 28, 28, dtype=torch.uint8), meta, files[kind])
                else:
                    to_torchscript(deployable(ckpt), meta, files[kind])
                generated.add(kind)
                notes.append(f"{kind} exported from the checkpoint for this run (no file given)")
        makers = {
            "eager": lambda: runners.eager(module, dev),
            "torchscript": lambda: runners.torchscript(files["torchscript"], dev),
            "onnx": lambda: runners.onnx(files["onnx"], dev, threads, tf32),
            "compile": lambda: runners.compiled(deployable(ckpt).to(dev), dev),
            "eager-cudagraph": lambda: runners.eager_cudagraph(module, dev),
            "onnx-cudagraph": lambda: runners.onnx_cudagraph(files["onnx"], dev, tf32),
        }
        active: dict[str, runners.Runner] = {}
        broken: dict[str, str] = {}  # backend -> why it could not be set up
        for b in backends:
            try:
                active[b] = makers[b]()
            except Exception as exc:  # one backend's failure must not cost the others' results
                broken[b] = _why(exc)
                if progress:
                    progress(f"{b}: FAILED ({broken[b]})")
        node_assignment = {r.name: r.nodes for r in active.values() if r.nodes is not None}
        for r in active.values():
            if r.fell_back:
                notes.append(f"{r.name}: CUDA requested but ONNX Runtime ran on {r.ran_on}; rows flagged fell_back")
        rng = np.random.default_rng(seed)
        c, s = ckpt.meta.config.in_channels, ckpt.meta.config.image_size
        rows: list[BenchRow] = []
        for bs in batch_sizes:
            x = rng.integers(0, 256, (bs, c, s, s), dtype=np.uint8)
            steps = {}
            errors = dict(broken)
            for name, r in active.items():
                if progress:
                    progress(f"batch {bs}: warming up {name}")
                try:
                    steps[name] = r.make_step(x)
                    # Warm-up: count, and at least 0.2 s (lets ORT/cuDNN/TorchScript settle).
                    _timed(steps[name], (warmup, 0), cuda)
                    _timed(steps[name], (None, 0.2), cuda)
                except Exception as exc:
                    steps.pop(name, None)
                    errors[name] = _why(exc)
            wall: dict[str, list[float]] = {n: [] for n in steps}
            devt: dict[str, list[float]] = {n: [] for n in steps}
            order = list(steps)
            for k in range(rounds):
                for name in order[k % len(order):] + order[: k % len(order)]:  # rotate who goes first
                    if name in errors:
                        continue
                    per_round = (max(1, -(-iters // rounds)) if iters else None, min_time / rounds)
                    try:
                        w, d = _timed(steps[name], per_round, cuda)
                    except Exception as exc:
                        errors[name] = _why(exc)
                        continue
                    wall[name] += w
                    devt[name] += d
            for name in backends:
                r = active.get(name)
                ran_on = r.ran_on if r else "-"
                if name in errors:
                    rows.append(BenchRow(name, bs, ran_on, None, None, fell_back=bool(r and r.fell_back),
                                         error=errors[name]))
                    continue
                st = summarize(wall[name])
                rows.append(BenchRow(name, bs, ran_on, st, bs / (st.mean_ms / 1e3),
                                     summarize(devt[name]) if devt[name] else None, None, r.fell_back))
            if progress:
                progress(f"batch {bs}: " + ", ".join(
                    f"{rw.backend} " + (f"{rw.images_per_s:,.0f} img/s" if rw.images_per_s else "FAILED")
                    for rw in rows if rw.batch_size == bs))
    base = {r.batch_size: r.images_per_s for r in rows if r.backend == "eager" and r.images_per_s}
    rows = [replace(r, speedup_vs_eager=r.images_per_s / base[r.batch_size])
            if r.batch_size in base and r.images_per_s else r for r in rows]
    for name, ops in node_assignment.items():
        off = {ep: n for ep, n in ops.items() if ep != "CUDAExecutionProvider"}
        if cuda and off:
            notes.append(f"{name}: not every node runs on CUDA ({', '.join(f'{ep}: {sorted(set(n))}' for ep, n in off.items())})")
    settings = {"backends": list(backends), "batch_sizes": list(batch_sizes), "warmup": warmup, "iters": iters,
                "min_time_s": min_time, "rounds": rounds, "threads": threads, "tf32": tf32 if cuda else None,
                "inputs": {k: str(v) for k, v in files.items() if k not in generated}}
    return BenchResult(dev.type, settings, environment(dev, threads), rows, notes, node_assignment)
