"""The timing method: warm-up excluded, backends alternated in rounds (so drift on a noisy machine hits all alike),
wall clock per iteration and, on CUDA, device time from CUDA events; a backend that fails becomes rows saying why."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnnkit.bench.results import BenchRow, summarize
from cnnkit.errors import first_line
from cnnkit.export.runners import Runner, Step

Events = tuple[Callable[[], Any], Callable[[Any], float]]


def cuda_events() -> Events:
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


def timed(
    step: Step, count: int | None, budget: float, events: Events | None = None
) -> tuple[list[float], list[float]]:
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
def torch_context(device: Any, threads: int, tf32: bool) -> Iterator[None]:
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


class Measurement:
    """One batch size measured across runners: warm-up, alternated rounds, then a row per runner."""

    def __init__(self, warmup: int, iters: int | None, min_time: float, rounds: int, events: Events | None):
        self.warmup, self.iters, self.min_time, self.rounds, self.events = warmup, iters, min_time, rounds, events

    def rows(
        self, x: np.ndarray, runners: dict[str, Runner], errors: dict[str, str], names: list[str]
    ) -> list[BenchRow]:
        """A row for each name in `names`: timed where its runner works, else the error it ends with."""
        errors = dict(errors)
        steps = self._warm(x, runners, errors)
        wall, devt, per_round = self._rounds(steps, errors)
        out = []
        bs = len(x)
        for name in names:
            runner = runners.get(name)
            ran_on, fell_back = (runner.ran_on, runner.fell_back) if runner else ("-", False)
            if name in errors:
                out.append(BenchRow(backend=name, batch_size=bs, ran_on=ran_on, latency=None, images_per_s=None,
                                    fell_back=fell_back, error=errors[name]))  # fmt: skip
                continue
            st = summarize(wall[name])
            images = bs * (runner.in_flight if runner else 1)  # a step with batches in flight runs each of them
            out.append(
                BenchRow(
                    backend=name,
                    batch_size=bs,
                    ran_on=ran_on,
                    latency=st,
                    images_per_s=images / (st.mean_ms / 1e3),
                    device_latency=summarize(devt[name]) if devt[name] else None,
                    fell_back=fell_back,
                    rounds_images_per_s=[images / seconds for seconds in per_round[name]],
                )
            )
        return out

    def _warm(self, x: np.ndarray, runners: dict[str, Runner], errors: dict[str, str]) -> dict[str, Step]:
        """Each runner's step on `x`, warmed up: `warmup` calls and at least 0.2 s (ORT, cuDNN, TorchScript settle)."""
        steps: dict[str, Step] = {}
        for name, runner in runners.items():
            try:
                steps[name] = runner.step(x)
                timed(steps[name], self.warmup, 0, self.events)
                timed(steps[name], None, 0.2, self.events)
            except Exception as exc:
                steps.pop(name, None)
                errors[name] = f"{type(exc).__name__}: {first_line(exc)}"
        return steps

    def _rounds(
        self, steps: dict[str, Step], errors: dict[str, str]
    ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
        """Wall and device seconds per step, the runners alternated in `rounds` with who goes first rotating; and
        each round's mean seconds per step (the paired samples a choice between runners is made on)."""
        wall: dict[str, list[float]] = {n: [] for n in steps}
        devt: dict[str, list[float]] = {n: [] for n in steps}
        means: dict[str, list[float]] = {n: [] for n in steps}
        order = list(steps)
        if not order:  # every runner failed: nothing to time
            return wall, devt, means
        per_round = max(1, -(-self.iters // self.rounds)) if self.iters else None
        for k in range(self.rounds):
            for name in order[k % len(order) :] + order[: k % len(order)]:
                if name in errors:
                    continue
                try:
                    w, d = timed(steps[name], per_round, self.min_time / self.rounds, self.events)
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {first_line(exc)}"
                    continue
                wall[name] += w
                devt[name] += d
                means[name].append(sum(w) / len(w))
        return wall, devt, means
