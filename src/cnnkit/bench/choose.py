"""Choosing between measured routes so that the choice survives a busy machine: on the medians of the alternated
rounds (`BenchRow.rounds_images_per_s`), not one sample; a route whose paired ratio to the leader is within the
spread (or within TIE) is a tie, and a tie goes to the simpler route (the caller's order: fewer engines and streams
first), then to the lower batch-1 latency. A leader whose own rounds scatter by more than NOISY is reported as too
noisy to decide on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnkit.bench.results import BenchResult, BenchRow

TIE = 0.03  # a median paired ratio within 3% of the leader's is a tie
NOISY = 0.15  # the leader's rounds: an interquartile range over 15% of their median is too noisy to decide on


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Which row is chosen at one batch size, and on what evidence."""

    batch: int
    chosen: str
    leader: str  # the highest median rate (the chosen row unless a simpler one tied with it)
    tied: list[str] = field(default_factory=list)  # the rows within the spread of the leader (the leader excluded)
    medians: dict[str, float] = field(default_factory=dict)  # row -> median images/s over its rounds
    rounds: int = 0
    noisy: bool = False

    def describe(self) -> str:
        why = ""
        if self.chosen != self.leader:
            why = f" (tied with {self.leader} within the measured spread; the simpler route kept)"
        elif self.tied:
            why = f" (tied with {', '.join(self.tied)} within the measured spread)"
        noise = "; the machine was too noisy to decide on (rounds scatter over 15%)" if self.noisy else ""
        return f"{self.chosen}{why}{noise}"


def rates(row: BenchRow) -> list[float]:
    """A row's per-round images/s (its overall rate where the rounds were not recorded)."""
    return list(row.rounds_images_per_s) or ([row.images_per_s] if row.images_per_s else [])


def ties(row: BenchRow, leader: BenchRow) -> bool:
    """Whether `row` cannot be told apart from `leader`: its median paired ratio (round k against round k, where
    the two ran back to back) is within TIE of 1, or 1 lies within the ratios' interquartile range."""
    a, b = rates(row), rates(leader)
    n = min(len(a), len(b))
    if n == 0:
        return False
    q = np.asarray(a[:n]) / np.asarray(b[:n])
    q25, q50, q75 = np.percentile(q, [25, 50, 75])
    return bool(q50 >= 1 - TIE or q25 <= 1 <= q75)


def decide(result: BenchResult, preference: Sequence[str], batch: int) -> Decision | None:
    """The choice at `batch` among the rows named in `preference` (simplest first); CPU fall-backs not counted."""
    timed = {
        r.backend: r
        for r in result.rows
        if r.batch_size == batch and r.images_per_s and not r.fell_back and r.backend in preference
    }
    if not timed:
        return None
    medians = {name: float(np.median(rates(r))) for name, r in timed.items()}
    leader = max(timed, key=lambda n: medians[n])
    tied = [n for n in timed if n != leader and ties(timed[n], timed[leader])]
    batch1 = {r.backend: r.latency.p50_ms for r in result.rows if r.batch_size == 1 and r.latency is not None}
    order = {name: i for i, name in enumerate(preference)}
    chosen = min([leader, *tied], key=lambda n: (order[n], batch1.get(n, float("inf"))))
    lead = np.asarray(rates(timed[leader]))
    q25, q75 = np.percentile(lead, [25, 75])
    return Decision(
        batch=batch,
        chosen=chosen,
        leader=leader,
        tied=sorted(tied, key=lambda n: order[n]),
        medians={n: round(m, 1) for n, m in medians.items()},
        rounds=len(lead),
        noisy=bool(len(lead) > 1 and (q75 - q25) > NOISY * float(np.median(lead))),
    )
