"""The engine side of `cnnkit optimize`: which engine choices to try on this machine (engines x float precisions x
streams), each passing ONNX candidate checked in every engine that would run it (the numbers judged are that
engine's), and the fastest passing choice per batch size recorded beside the file for `--engine auto`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from cnnkit.bench import choose
from cnnkit.bench.results import BenchResult
from cnnkit.export.compare import Gate, ParityReport
from cnnkit.runtime import EngineChoice, openvino_engine, plan

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class EngineCheck:
    candidate: str
    choice: str  # EngineChoice.label without streams: onnx, openvino, openvino-bf16
    passed: bool
    check: str


def engine_choices(device: str) -> list[EngineChoice]:
    """What optimize measures: ONNX Runtime, and on the CPU OpenVINO (fp32; bf16 where the CPU has it), each as one
    stream on every core and, on a machine with several cores, as two single-threaded streams; and OpenVINO's
    THROUGHPUT mode with two requests in flight (for callers with concurrent batches)."""
    if device != "cpu":
        return [EngineChoice()]
    kinds = [EngineChoice()]
    if openvino_engine.available():
        kinds.append(EngineChoice(engine="openvino"))
        if "BF16" in openvino_engine.capabilities():
            kinds.append(EngineChoice(engine="openvino", precision="bf16"))
    several = (os.cpu_count() or 1) >= 2
    streams = (1, 2) if several else (1,)
    choices = [replace(k, streams=s) for k in kinds for s in streams]
    return choices + [replace(k, requests=2) for k in kinds if several and k.engine == "openvino"]


def kind(choice: EngineChoice) -> EngineChoice:
    """The (engine, precision) a choice computes with, whatever its streams and requests: what a check is made in."""
    return replace(choice, streams=1, requests=1)


def check_on_engines(
    ckpt_path: Path,
    files: dict[str, Path],
    choices: list[EngineChoice],
    gate: Gate,
    progress: Callable[[str], None] | None,
) -> list[EngineCheck]:
    """Every ONNX candidate verified in every (engine, precision) beyond ONNX Runtime fp32 (export checked that one):
    fp32 value by value, INT8 files and bf16 arithmetic on the real test split."""
    from cnnkit.export.verify import verify

    checks = []
    kinds = list(dict.fromkeys(kind(c) for c in choices if c.engine != "onnxruntime" or c.precision != "fp32"))
    for name, path in files.items():
        if path.suffix != ".onnx":
            continue
        for k in kinds:
            if progress:
                progress(f"verifying {name} on {k.label}")
            report = verify([path], ckpt_path, replace(gate, engine=k.engine, engine_precision=k.precision))
            ok, summary = check_summary(report)
            checks.append(EngineCheck(candidate=name, choice=k.label, passed=ok, check=summary))
    return checks


def check_summary(report: ParityReport | None) -> tuple[bool, str]:
    """(passed, one line) from a parity report (None: the file was not verified)."""
    if report is None:
        return True, "not verified"
    parts = []
    for b in report.backends:
        if b.gate is not None:
            parts.append(f"agreement {b.gate.agreement:.2%}, accuracy {b.gate.accuracy_change:+.2f} points")
        elif b.cases:
            parts.append(f"max |Δ| {b.max_abs:.1e}")
        if b.error:
            parts.append(b.error)
    return bool(report), "; ".join(parts) or "no result"


def passed(checks: list[EngineCheck], candidate: str, choice: EngineChoice) -> bool:
    """ONNX Runtime fp32 was checked at export; any other (engine, precision) needs its own passing check."""
    if choice.engine == "onnxruntime" and choice.precision == "fp32":
        return True
    label = kind(choice).label
    return any(c.passed for c in checks if c.candidate == candidate and c.choice == label)


def fastest(result: BenchResult, rows: Mapping[str, T], batch: int) -> T | None:
    """What `rows` (bench row -> anything, simplest route first) gives for the row chosen at `batch`: the fastest
    on the medians of the alternated rounds, a tie going to the simpler route (`bench.choose`)."""
    decision = choose.decide(result, list(rows), batch)
    return rows[decision.chosen] if decision is not None else None


def simplest_first(rows: Mapping[str, tuple[str, EngineChoice]]) -> dict[str, tuple[str, EngineChoice]]:
    """`rows` ordered simplest route first: ONNX Runtime before OpenVINO, one stream before several, one request in
    flight before several, fp32 arithmetic before reduced; the candidates' own order kept within each."""

    def key(kv: tuple[str, tuple[str, EngineChoice]]) -> tuple[bool, int, int, bool]:
        c = kv[1][1]
        return c.engine != "onnxruntime", c.streams, c.requests, c.precision != "fp32"

    return dict(sorted(rows.items(), key=key))


def record(
    result: BenchResult,
    rows: dict[str, tuple[str, EngineChoice]],
    candidate: str,
    file: Path,
    batch_sizes: tuple[int, ...],
) -> Path | None:
    """Write the fastest passing choice per batch size for `candidate`'s rows beside `file` (runtime.json): for one
    caller among the rows timed one batch at a time, and for callers with batches in flight among all of them."""
    mine = simplest_first({row: rc for row, rc in rows.items() if rc[0] == candidate})
    alone = one_at_a_time(mine)
    winners: dict[int, EngineChoice] = {}
    in_flight: dict[int, EngineChoice] = {}
    measured: dict[str, dict[str, float]] = {}
    for bs in batch_sizes:
        best, best_in_flight = fastest(result, alone, bs), fastest(result, mine, bs)
        if best is not None:
            winners[bs] = best[1]
        if best_in_flight is not None:
            in_flight[bs] = best_in_flight[1]
        measured[str(bs)] = {
            mine[r.backend][1].label: round(r.images_per_s, 1)
            for r in result.rows
            if r.batch_size == bs and r.backend in mine and r.images_per_s
        }
    if not winners:
        return None
    info = {"images_per_s": measured, "threads": result.settings.get("threads")}
    return plan.save(file, winners, info, in_flight if in_flight != winners else None)


def one_at_a_time(rows: Mapping[str, tuple[str, EngineChoice]]) -> dict[str, tuple[str, EngineChoice]]:
    """The rows timed one batch at a time: what a lone caller gets (a row with requests in flight was timed with
    several batches at once, which one caller never sends)."""
    return {row: rc for row, rc in rows.items() if rc[1].requests == 1}
