"""`cnnkit optimize`: export every candidate variant of a checkpoint, verify each against its gate, benchmark the
survivors side by side, and name the fastest passing variant per batch size (what NVIDIA's Model Navigator does
for large models, for this toolkit). A candidate that fails its gate is listed with the reason, never chosen.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnkit.bench.results import BenchResult
from cnnkit.bench.run import BenchConfig, bench, onnx_labels
from cnnkit.errors import CnnkitError, first_line
from cnnkit.export.compare import Gate
from cnnkit.export.exporter import ExportOptions, export, place
from cnnkit.train import checkpoint


@dataclass(frozen=True, kw_only=True)
class Candidate:
    name: str
    format: str  # "onnx" | "torchscript"
    precision: str = "fp32"
    fold: bool = True
    cuda_only: bool = False  # fp16 runs no faster than fp32 on a CPU: offered on CUDA only


CANDIDATES = (
    Candidate(name="fp32", format="onnx", fold=False),
    Candidate(name="fp32-folded", format="onnx"),
    Candidate(name="int8-folded", format="onnx", precision="int8"),
    Candidate(name="fp16-folded", format="onnx", precision="fp16", cuda_only=True),
    Candidate(name="torchscript-folded", format="torchscript"),
)


@dataclass(frozen=True, kw_only=True)
class OptimizeOptions:
    """Which batch sizes to measure, for how long, and whether to select the winner (built once from the CLI).
    Candidates are verified and benchmarked on `gate.device`."""

    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    min_time: float = 1.0
    select: bool = False
    target_batch: int = 64
    gate: Gate = field(default_factory=Gate)

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise CnnkitError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        if self.select and self.target_batch not in self.batch_sizes:
            raise CnnkitError(
                f"--select picks the fastest at --target-batch {self.target_batch}, which is not among --batch-sizes "
                f"{','.join(map(str, self.batch_sizes))}; add it"
            )

    @property
    def device(self) -> str:
        return self.gate.device


@dataclass(frozen=True, kw_only=True)
class CandidateResult:
    name: str
    file: str | None
    passed: bool
    check: str  # what the gate measured, or why the candidate failed
    row: str | None = None  # its backend name in the bench rows


@dataclass(frozen=True, kw_only=True)
class OptimizeResult:
    checkpoint: str
    device: str
    candidates: list[CandidateResult]
    bench: BenchResult | None
    winners: dict[int, str] = field(default_factory=dict)  # batch size -> fastest passing candidate
    selected: str | None = None
    selected_file: str | None = None
    target_batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bench"] = self.bench.to_dict() if self.bench else None
        return d


def _check_summary(result: Any) -> tuple[bool, str]:
    """(passed, one line) from an ExportResult."""
    report = result.parity
    if report is None:
        return True, "not verified"
    parts = []
    for b in report.backends:
        if b.gate is not None:
            g = b.gate
            parts.append(f"agreement {g.agreement:.2%}, accuracy {g.accuracy_change:+.2f} points")
        elif b.cases:
            parts.append(f"max |Δ| {b.max_abs:.1e}")
        if b.error:
            parts.append(b.error)
    return bool(report), "; ".join(parts) or "no result"


def optimize(
    run: str | os.PathLike[str],
    options: OptimizeOptions = OptimizeOptions(),
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Export, verify and benchmark every candidate; with `options.select`, copy the fastest passing ONNX variant at
    `options.target_batch` to the run's model.onnx."""
    ckpt_path = checkpoint.resolve(run)
    results, files = _export_candidates(ckpt_path, options, progress)
    device = options.device
    if not files:
        return OptimizeResult(
            checkpoint=str(ckpt_path), device=device, candidates=results, bench=None, target_batch=options.target_batch
        )
    result, labels = _bench_candidates(ckpt_path, files, options, progress)
    by_row = {row: name for name, row in labels.items()}
    results = [replace(r, row=labels.get(r.name)) for r in results]
    winners: dict[int, str] = {}
    for bs in options.batch_sizes:
        best = _fastest(result, bs, None)
        if best:
            winners[bs] = by_row.get(best, best)
    selected = selected_file = None
    if options.select:
        selected, selected_file = _select(ckpt_path, result, by_row, files, options.target_batch)
    return OptimizeResult(
        checkpoint=str(ckpt_path),
        device=device,
        candidates=results,
        bench=result,
        winners=winners,
        selected=selected,
        selected_file=selected_file,
        target_batch=options.target_batch,
    )


def _export_candidates(
    ckpt_path: Path, options: OptimizeOptions, progress: Callable[[str], None] | None
) -> tuple[list[CandidateResult], dict[str, Path]]:
    """Every candidate exported into `candidates/<name>/` and gated; the files of those that passed."""
    results: list[CandidateResult] = []
    files: dict[str, Path] = {}
    for cand in CANDIDATES:
        if cand.cuda_only and options.device != "cuda":
            results.append(
                CandidateResult(
                    name=cand.name, file=None, passed=False, check="skipped: for CUDA (no faster than fp32 on a CPU)"
                )
            )
            continue
        if progress:
            progress(f"exporting and verifying {cand.name}")
        target = ckpt_path.parent / "candidates" / cand.name
        if target.exists():
            shutil.rmtree(target)  # a stale candidate must not be benchmarked as this run's
        chosen = ExportOptions(formats=(cand.format,), precision=cand.precision, fold=cand.fold, gate=options.gate)
        try:
            made = export(ckpt_path, target, chosen)
        except CnnkitError as exc:
            results.append(
                CandidateResult(name=cand.name, file=None, passed=False, check=f"export failed: {first_line(exc)}")
            )
            continue
        passed, check = _check_summary(made)
        file = made.artefacts.get(cand.format)
        if passed and file:
            files[cand.name] = Path(file)
        results.append(CandidateResult(name=cand.name, file=file, passed=passed, check=check))
    return results, files


def _bench_candidates(
    ckpt_path: Path, files: dict[str, Path], options: OptimizeOptions, progress: Callable[[str], None] | None
) -> tuple[BenchResult, dict[str, str]]:
    """The passing candidates benchmarked side by side; and candidate name -> its bench row name."""
    onnx_names = [c.name for c in CANDIDATES if c.format == "onnx" and c.name in files]
    labels = dict(zip(onnx_names, onnx_labels([files[n] for n in onnx_names])))
    paths = [str(ckpt_path)] + [str(files[n]) for n in onnx_names]
    backends: tuple[str, ...] = ("onnx",) if onnx_names else ()
    if "torchscript-folded" in files:
        labels["torchscript-folded"] = "torchscript"
        paths.append(str(files["torchscript-folded"]))
        backends += ("torchscript",)
    if progress:
        progress(f"benchmarking {', '.join(files)} on {options.device}")
    config = BenchConfig(
        device=options.device, backends=backends, batch_sizes=options.batch_sizes, min_time=options.min_time
    )
    return bench(paths, config, progress), labels


def _fastest(result: BenchResult, batch: int, rows: set[str] | None) -> str | None:
    """The bench row with the most images/s at `batch` (among `rows`), not counting CPU fall-backs."""
    timed = [
        r
        for r in result.rows
        if r.batch_size == batch and r.images_per_s and not r.fell_back and (rows is None or r.backend in rows)
    ]
    return max(timed, key=lambda r: r.images_per_s or 0.0).backend if timed else None


def _select(
    ckpt_path: Path, result: BenchResult, by_row: dict[str, str], files: dict[str, Path], target_batch: int
) -> tuple[str, str]:
    """Place the fastest passing ONNX candidate at `target_batch` as the run's model.onnx (a first-class export:
    its metadata and the run's exports.json say where it lives)."""
    onnx_rows = {row for row, name in by_row.items() if files[name].suffix == ".onnx"}
    best = _fastest(result, target_batch, onnx_rows)
    if best is None:
        raise CnnkitError(f"no passing ONNX candidate was benchmarked at batch {target_batch}; add it to --batch-sizes")
    selected = by_row[best]
    return selected, str(place(files[selected], ckpt_path.parent / "model.onnx"))
