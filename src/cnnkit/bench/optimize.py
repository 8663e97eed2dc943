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

from cnnkit import atomic
from cnnkit.bench import backends as bk
from cnnkit.bench import choose
from cnnkit.bench import engine_choices as ec
from cnnkit.bench.inputs import file_tags
from cnnkit.bench.options import BenchConfig, OptimizeOptions, row_name
from cnnkit.bench.results import BenchResult
from cnnkit.bench.run import bench
from cnnkit.errors import CnnkitError, first_line
from cnnkit.export import nncf_quant
from cnnkit.export.exporter import ExportOptions, export, place
from cnnkit.runtime import EngineChoice
from cnnkit.train import checkpoint


@dataclass(frozen=True, kw_only=True)
class Candidate:
    name: str
    format: str  # "onnx" | a torch-side format: "torchscript", "exported", "aoti"
    precision: str = "fp32"
    fold: bool = True
    quantizer: str = "onnxruntime"  # INT8: cnnkit's recipe in ONNX Runtime's quantizer, or NNCF's (its extra)
    cuda_only: bool = False  # fp16 runs no faster than fp32 on a CPU: offered on CUDA only
    asked: bool = False  # offered only when asked for (OptimizeOptions.aoti: it compiles for about a minute)


CANDIDATES = (
    Candidate(name="fp32", format="onnx", fold=False),
    Candidate(name="fp32-folded", format="onnx"),
    Candidate(name="int8-folded", format="onnx", precision="int8"),
    Candidate(name="int8-nncf-folded", format="onnx", precision="int8", quantizer="nncf"),
    Candidate(name="fp16-folded", format="onnx", precision="fp16", cuda_only=True),
    Candidate(name="torchscript-folded", format="torchscript"),
    Candidate(name="exported-folded", format="exported"),
    Candidate(name="aoti-folded", format="aoti", asked=True),
)
TORCH_ROWS = {c.format: c.name for c in CANDIDATES if c.format != "onnx"}  # bench backend -> torch-side candidate


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
    engine_checks: list[ec.EngineCheck] = field(default_factory=list)  # each ONNX candidate in each other engine
    winners: dict[int, str] = field(default_factory=dict)  # batch size -> fastest passing '<candidate> on <choice>'
    decisions: dict[int, choose.Decision] = field(default_factory=dict)  # batch size -> the choice and its evidence
    # the same for callers with batches in flight (serve), among every row, those timed so included
    in_flight_winners: dict[int, str] = field(default_factory=dict)
    in_flight_decisions: dict[int, choose.Decision] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)  # candidate -> the runtime.json written beside its file
    selected: str | None = None
    selected_file: str | None = None
    target_batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bench"] = self.bench.to_dict() if self.bench else None
        return d


def optimize(
    run: str | os.PathLike[str],
    options: OptimizeOptions = OptimizeOptions(),
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Export every candidate, verify each in every engine that would run it, benchmark the passing (file, engine,
    precision, streams) combinations side by side, record the fastest per batch size beside each file (runtime.json,
    read by `--engine auto`); with `options.select`, place the fastest at `options.target_batch` as model.onnx."""
    ckpt_path = checkpoint.resolve(run)
    results, files = _export_candidates(ckpt_path, options, progress)
    device = options.device
    if not files:
        return OptimizeResult(
            checkpoint=str(ckpt_path), device=device, candidates=results, bench=None, target_batch=options.target_batch
        )
    choices = ec.engine_choices(device)
    checks = ec.check_on_engines(ckpt_path, files, choices, options.gate, progress)
    result, rows, torch_rows = _bench_candidates(ckpt_path, files, choices, checks, options, progress)
    results = [replace(r, row=_row_of(r.name, rows, torch_rows)) for r in results]
    names = _route_names(rows, torch_rows)
    timed_in_flight = rows.keys() - ec.one_at_a_time(rows).keys()  # the one rule of which rows a lone caller gets
    alone = [row for row in names if row not in timed_in_flight]
    decisions = {bs: d for bs in options.batch_sizes if (d := choose.decide(result, alone, bs))}
    in_flight = {bs: d for bs in options.batch_sizes if (d := choose.decide(result, list(names), bs))}
    records = {
        name: str(path)
        for name in files
        if files[name].suffix == ".onnx"
        and (path := ec.record(result, rows, name, files[name], options.batch_sizes)) is not None
    }
    selected = selected_file = None
    if options.select:
        selected, selected_file = _select(ckpt_path, result, rows, files, options)
    return OptimizeResult(
        checkpoint=str(ckpt_path),
        device=device,
        candidates=results,
        engine_checks=checks,
        bench=result,
        winners={bs: names[d.chosen] for bs, d in decisions.items()},
        decisions=decisions,
        in_flight_winners={bs: names[d.chosen] for bs, d in in_flight.items()},
        in_flight_decisions=in_flight,
        records=records,
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
    _inside_the_run(ckpt_path.parent / "candidates", ckpt_path.parent)
    from cnnkit.train import checkpoint, nets

    foldable = nets.foldable(checkpoint.load(ckpt_path).meta.config)
    for cand in CANDIDATES:
        skip = None
        if cand.cuda_only and options.device != "cuda":
            skip = "skipped: for CUDA (no faster than fp32 on a CPU)"
        elif cand.name == "fp32-folded" and not foldable:
            skip = "skipped: the fold is the seed network's (this one is the fp32 candidate)"
        elif cand.quantizer == "nncf" and not nncf_quant.available():
            skip = f"skipped: NNCF is not installed ({nncf_quant.INSTALL})"
        elif cand.asked and not options.aoti:
            skip = "skipped: an AOTInductor package compiles for about a minute; pass --aoti to include it"
        if skip:
            results.append(CandidateResult(name=cand.name, file=None, passed=False, check=skip))
            continue
        if progress:
            progress(f"exporting and verifying {cand.name}")
        target = ckpt_path.parent / "candidates" / cand.name
        if target.exists():
            shutil.rmtree(target)  # a stale candidate must not be benchmarked as this run's
        chosen = ExportOptions(
            formats=(cand.format,), precision=cand.precision, fold=cand.fold, quantizer=cand.quantizer,
            gate=options.gate,
        )  # fmt: skip
        try:
            made = export(ckpt_path, target, chosen)
        except CnnkitError as exc:
            results.append(
                CandidateResult(name=cand.name, file=None, passed=False, check=f"export failed: {first_line(exc)}")
            )
            continue
        passed, check = ec.check_summary(made.parity)
        file = made.artefacts.get(cand.format)
        if passed and file:
            files[cand.name] = Path(file)
        results.append(CandidateResult(name=cand.name, file=file, passed=passed, check=check))
    return results, files


def _inside_the_run(folder: Path, run: Path) -> None:
    """Refuse (before anything is emptied or written) a `candidates/` that leads out of the run folder: a symbolic
    link, or one inside it (run folders travel as tarballs, which keep links)."""
    paths = [folder, *(folder / c.name for c in CANDIDATES)]
    link = next((p for p in paths if p.is_symlink()), None)
    if link is not None or (folder.exists() and not folder.resolve().is_relative_to(run.resolve())):
        raise CnnkitError(f"{link or folder}: a symbolic link; optimize writes only inside the run folder {run}")


Rows = dict[str, tuple[str, EngineChoice]]  # bench row -> (candidate, engine choice)


def _bench_candidates(
    ckpt_path: Path,
    files: dict[str, Path],
    choices: list[EngineChoice],
    checks: list[ec.EngineCheck],
    options: OptimizeOptions,
    progress: Callable[[str], None] | None,
) -> tuple[BenchResult, Rows, dict[str, str]]:
    """The passing candidates benchmarked side by side in every engine choice; the ONNX rows that passed their
    engine's check, and the torch-side rows (bench backend -> candidate)."""
    onnx_names = [c.name for c in CANDIDATES if c.format == "onnx" and c.name in files]
    tags = dict(zip(onnx_names, file_tags([files[n] for n in onnx_names])))
    rows: Rows = {
        row_name(choice.label, tags[name]): (name, choice)
        for name in onnx_names
        for choice in choices
        if ec.passed(checks, name, choice)
    }
    paths = [str(ckpt_path)] + [str(files[n]) for n in onnx_names]
    kinds = {ec.kind(c) for c in choices}
    backends: tuple[str, ...] = tuple(b for b, kind in bk.ENGINE_BACKENDS.items() if onnx_names and kind in kinds)
    torch_rows = {row: name for row, name in TORCH_ROWS.items() if name in files}
    for row, name in torch_rows.items():
        paths.append(str(files[name]))
        backends += (row,)
    if progress:
        progress(f"benchmarking {', '.join(files)} in {', '.join(sorted({c.label for c in choices}))}")
    config = BenchConfig(
        device=options.device,
        backends=backends,
        batch_sizes=options.batch_sizes,
        min_time=options.min_time,
        streams=tuple(sorted({c.streams for c in choices})),
        requests=tuple(sorted({c.requests for c in choices})),
    )
    return bench(paths, config, progress), rows, torch_rows


def _row_of(name: str, rows: Rows, torch_rows: dict[str, str]) -> str | None:
    """The candidate's ONNX Runtime row (one stream), or its torch-side row."""
    torch_row = next((row for row, cand in torch_rows.items() if cand == name), None)
    if torch_row is not None:
        return torch_row
    return next((row for row, (cand, c) in rows.items() if cand == name and c == EngineChoice()), None)


def _route_names(rows: Rows, torch_rows: dict[str, str]) -> dict[str, str]:
    """Bench row -> '<candidate> on <engine choice>' (or '<candidate> in torch'), simplest route first: ONNX Runtime
    before OpenVINO, one stream before several, then the torch-side rows (they need torch where they run)."""
    names = {row: f"{name} on {choice.label}" for row, (name, choice) in ec.simplest_first(rows).items()}
    names.update({row: f"{name} in torch" for row, name in torch_rows.items()})
    return names


def _select(
    ckpt_path: Path, result: BenchResult, rows: Rows, files: dict[str, Path], options: OptimizeOptions
) -> tuple[str, str]:
    """Place the fastest passing ONNX candidate at the target batch as the run's model.onnx (a first-class export:
    its metadata and the run's exports.json say where it lives), with its engine record beside it."""
    best = ec.fastest(result, ec.one_at_a_time(ec.simplest_first(rows)), options.target_batch)
    if best is None:
        raise CnnkitError(
            f"no passing ONNX candidate was benchmarked at batch {options.target_batch}; add it to --batch-sizes"
        )
    name = best[0]
    dest = ckpt_path.parent / "model.onnx"
    kept = {p: p.read_bytes() for p in (dest, dest.parent / "exports.json") if p.is_file()}
    place(files[name], dest)
    try:
        ec.record(result, rows, name, dest, options.batch_sizes)
    except BaseException:  # the selection lands with its record or not at all: what was there is put back
        for p in (dest, dest.parent / "exports.json"):
            if p in kept:
                atomic.write_bytes(p, kept[p])
            else:
                p.unlink(missing_ok=True)
        raise
    return f"{name} on {best[1].label}", str(dest)
