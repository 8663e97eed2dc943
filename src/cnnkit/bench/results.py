"""Bench results as data: latency statistics, one row per backend and batch size, the whole run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
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
    return Stats(
        n=int(a.size), mean_ms=float(a.mean()), p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99),
        min_ms=float(a.min()),
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
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
    rounds_images_per_s: list[float] = field(default_factory=list)  # each alternated round's own rate (bench.choose)


@dataclass(frozen=True, kw_only=True)
class BenchResult:
    device: str
    settings: dict[str, Any]
    environment: dict[str, Any]
    rows: list[BenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # ONNX backends: {backend: {execution provider: op types of the nodes it runs}}
    node_assignment: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def failed(self) -> list[BenchRow]:
        return [r for r in self.rows if r.error]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
