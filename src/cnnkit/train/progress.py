"""Training progress on stderr: live bars in a terminal, a plain line every few seconds and per epoch elsewhere.

In a CI log or behind `| tee`, a tqdm bar is thousands of carriage-return updates; there a line every
`every_s` seconds (and one per epoch) says the same.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


class Progress:
    def __init__(self, enabled: bool = True, interactive: bool | None = None, every_s: float = 10.0):
        self.enabled = enabled
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.every_s = every_s
        self._bar: Any = None
        self._label = ""
        self._unit = "step"
        self._total = 0
        self._t0 = self._shown = 0.0
        self.refresh_s = 0.5 if self.interactive else every_s

    def start(self, label: str, total_steps: int, unit: str = "step") -> None:
        self._label, self._total, self._unit = label, total_steps, unit
        self._t0 = self._shown = time.perf_counter()
        if self.enabled and self.interactive:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, desc=label, unit=unit, leave=True, dynamic_ncols=True)

    def update(self, done: int, stats: Callable[[], dict[str, str]]) -> None:
        """`done` steps of this epoch finished; `stats` is called only when a figure is shown (it may sync a GPU)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
        now = time.perf_counter()
        if now - self._shown < self.refresh_s:
            return
        self._shown = now
        figures = stats()
        if self._bar is not None:
            self._bar.set_postfix(figures)
        else:
            body = ", ".join(f"{k} {v}" for k, v in figures.items())
            self.line(f"{self._label}: {self._unit} {done:,}/{self._total:,}, {body}")

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)


class PhaseProgress:
    """The image-folder loader's progress callback (`data.cache.Progress`: phase, done, total) on a `Progress`: a
    bar per phase in a terminal, else a line every few seconds, with the count and the rate."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self._phase = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self.progress.end()
            self._phase = phase
            self.progress.start(phase, total, unit="file")
        t0 = self.progress._t0
        self.progress.update(done, lambda: {"files/s": f"{done / max(time.perf_counter() - t0, 1e-9):,.0f}"})
        if done == total:
            if self.progress._bar is None and self.progress.enabled:
                rate = done / max(time.perf_counter() - t0, 1e-9)
                self.progress.line(f"{phase}: {done:,}/{total:,} files, {rate:,.0f} files/s")
            self.progress.end()
