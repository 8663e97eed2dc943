"""`cnnkit optimize`: export every candidate variant of a checkpoint, verify each against its gate, benchmark the
survivors side by side, and name the fastest passing variant per batch size (what NVIDIA's Model Navigator does
for large models, for this toolkit). A candidate that fails its gate is listed with the reason, never chosen.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnkit import atomic
from cnnkit.bench.results import BenchResult
from cnnkit.errors import CnnkitError, first_line


@dataclass(frozen=True)
class Candidate:
    name: str
    format: str  # "onnx" | "torchscript"
    precision: str = "fp32"
    fold: bool = True
    cuda_only: bool = False  # fp16 runs no faster than fp32 on a CPU: offered on CUDA only


CANDIDATES = (
    Candidate("fp32", "onnx", fold=False),
    Candidate("fp32-folded", "onnx"),
    Candidate("int8-folded", "onnx", "int8"),
    Candidate("fp16-folded", "onnx", "fp16", cuda_only=True),
    Candidate("torchscript-folded", "torchscript"),
)


@dataclass(frozen=True)
class CandidateResult:
    name: str
    file: str | None
    passed: bool
    check: str  # what the gate measured, or why the candidate failed
    row: str | None = None  # its backend name in the bench rows


@dataclass(frozen=True)
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
    device: str = "cpu",
    batch_sizes: tuple[int, ...] = (1, 8, 64, 256),
    min_time: float = 1.0,
    select: bool = False,
    target_batch: int = 64,
    data_dir: Any = None,
    min_agreement: float = 0.995,
    max_accuracy_drop: float = 0.3,
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Export, verify and benchmark every candidate; with `select`, copy the fastest passing ONNX variant at
    `target_batch` to the run's model.onnx."""
    from cnnkit.bench.run import bench, onnx_labels
    from cnnkit.export.exporter import export
    from cnnkit.train import checkpoint

    ckpt_path = checkpoint.resolve(run)
    out_root = ckpt_path.parent / "candidates"
    results: list[CandidateResult] = []
    files: dict[str, Path] = {}
    for cand in CANDIDATES:
        if cand.cuda_only and device != "cuda":
            results.append(CandidateResult(cand.name, None, False, "skipped: for CUDA (no faster than fp32 on a CPU)"))
            continue
        if progress:
            progress(f"exporting and verifying {cand.name}")
        target = out_root / cand.name
        if target.exists():
            shutil.rmtree(target)  # a stale candidate must not be benchmarked as this run's
        try:
            made = export(
                ckpt_path,
                target,
                formats=(cand.format,),
                precision=cand.precision,
                fold=cand.fold,
                data_dir=data_dir,
                min_agreement=min_agreement,
                max_accuracy_drop=max_accuracy_drop,
                device=device,
            )
        except CnnkitError as exc:
            results.append(CandidateResult(cand.name, None, False, f"export failed: {first_line(exc)}"))
            continue
        passed, check = _check_summary(made)
        file = made.artefacts.get(cand.format)
        if passed and file:
            files[cand.name] = Path(file)
        results.append(CandidateResult(cand.name, file, passed, check))
    onnx_names = [c.name for c in CANDIDATES if c.format == "onnx" and c.name in files]
    if not files:
        return OptimizeResult(str(ckpt_path), device, results, None, target_batch=target_batch)
    labels = dict(zip(onnx_names, onnx_labels([files[n] for n in onnx_names])))
    if "torchscript-folded" in files:
        labels["torchscript-folded"] = "torchscript"
    results = [CandidateResult(r.name, r.file, r.passed, r.check, labels.get(r.name)) for r in results]
    backends = (("onnx",) if onnx_names else ()) + (("torchscript",) if "torchscript-folded" in files else ())
    paths = [str(ckpt_path)] + [str(files[n]) for n in onnx_names]
    if "torchscript-folded" in files:
        paths.append(str(files["torchscript-folded"]))
    if progress:
        progress(f"benchmarking {', '.join(files)} on {device}")
    result = bench(
        paths, device=device, backends=backends, batch_sizes=batch_sizes, min_time=min_time, progress=progress
    )
    by_row = {v: k for k, v in labels.items()}
    winners: dict[int, str] = {}
    for bs in batch_sizes:
        rows = [r for r in result.rows if r.batch_size == bs and r.images_per_s and not r.fell_back]
        if rows:
            best = max(rows, key=lambda r: r.images_per_s or 0.0)
            winners[bs] = by_row.get(best.backend, best.backend)
    selected = selected_file = None
    if select:
        rows = [
            r
            for r in result.rows
            if r.batch_size == target_batch
            and r.images_per_s
            and not r.fell_back
            and by_row.get(r.backend) in onnx_names
        ]
        if not rows:
            raise CnnkitError(
                f"no passing ONNX candidate was benchmarked at batch {target_batch}; add it to --batch-sizes"
            )
        selected = by_row[max(rows, key=lambda r: r.images_per_s or 0.0).backend]
        dest = ckpt_path.parent / "model.onnx"
        atomic.write_bytes(dest, files[selected].read_bytes())
        selected_file = str(dest)
    return OptimizeResult(str(ckpt_path), device, results, result, winners, selected, selected_file, target_batch)
