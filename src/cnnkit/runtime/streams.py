"""Run one batch as N parts at once, one part per executor (a session or an infer request), and put the rows back
in order. Engines release the GIL while they compute, so threads are enough."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]


class Streams:
    """`streams(x)`: `x` split into at most len(runs) near-equal parts, run concurrently, concatenated.

    A batch smaller than the number of streams uses as many streams as it has images; one image runs on the first
    stream alone, in the calling thread. Each run is called by one thread at a time (each has a lock), so runs that
    are not thread-safe (an OpenVINO infer request) may be used from several threads at once."""

    def __init__(self, runs: list[Run]):
        self._runs = runs
        self._locks = [threading.Lock() for _ in runs]
        self._pool = (
            ThreadPoolExecutor(max_workers=len(runs) - 1, thread_name_prefix="cnnkit-stream") if len(runs) > 1 else None
        )

    def __len__(self) -> int:
        return len(self._runs)

    def _one(self, i: int, x: np.ndarray) -> np.ndarray:
        with self._locks[i]:
            return self._runs[i](x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        k = min(len(self._runs), len(x))
        if k <= 1 or self._pool is None:
            return self._one(0, x)
        parts = np.array_split(x, k)
        futures = [self._pool.submit(self._one, i, p) for i, p in enumerate(parts[1:], start=1)]
        first = self._one(0, parts[0])
        return np.concatenate([first, *(f.result() for f in futures)])
