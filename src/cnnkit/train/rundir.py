"""The run folder: its default name, what cnnkit writes there, and the rule that an earlier run is never trained
over unless `--force` (which clears cnnkit's files and nothing else)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from cnnkit.contract import FILENAMES, MANIFEST
from cnnkit.errors import CheckpointError
from cnnkit.spec import META_NAME, WEIGHTS_NAME
from cnnkit.train import curves, resume

METRICS_NAME = "metrics.jsonl"


def default_out_dir(root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stamp
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def run_files() -> tuple[str, ...]:
    """What cnnkit writes into a run folder (train and export): `--force` clears these and nothing else."""
    return (
        WEIGHTS_NAME,
        META_NAME,
        METRICS_NAME,
        resume.STATE_JSON,
        resume.STATE_TENSORS,
        curves.CURVES_NAME,
        MANIFEST,
        *FILENAMES.values(),
        "model.int8.onnx",
        "model.fp16.onnx",
        "bench.json",  # what `make demo` and the docs write beside a run
        "bench.csv",
        "bench.png",
        "candidates",  # cnnkit optimize's exports
    )


def check_out_dir(out_dir: Path, force: bool) -> bool:
    """Whether `out_dir` holds something; CheckpointError if that is an earlier run's and not `force`d away."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir}: exists and is not a folder")
    used = out_dir.is_dir() and any(out_dir.iterdir())
    if used and not force:
        raise CheckpointError(
            f"{out_dir}: not empty (an earlier run?); pass --resume {out_dir} to continue it, --force to "
            "replace it, or another --out"
        )
    return used


def prepare_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse to train over an earlier run (its checkpoint would be lost) unless `force`, which removes cnnkit's
    files from the folder first, so no stale export is left beside the new checkpoint."""
    if check_out_dir(out_dir, force):
        for name in run_files():
            p = out_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)  # an unusable --out fails now, not after the first epoch
