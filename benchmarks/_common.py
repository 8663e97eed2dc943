"""Helpers shared by the benchmark scripts: a trained model to measure, machine description, output."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from cnnkit.bench.env import RESULTS as RESULTS_DIR  # the one place: provenance reads it too

RESULTS = Path(__file__).resolve().parents[1] / RESULTS_DIR


def machine() -> dict:
    """The CPU, its relevant flags, and the commit that was measured (with whether the tree had changes)."""
    import os

    from cnnkit.bench.env import cpu_flags, cpu_model, provenance

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **provenance(RESULTS.parent.parent),
    }


def ensure_model(run_dir: Path) -> Path:
    """Train (default recipe, bundled sample) and export into run_dir unless a model is already there."""
    import subprocess

    onnx = run_dir / "model.onnx"
    if not onnx.is_file():
        cnnkit = [sys.executable, "-m", "cnnkit"]
        subprocess.run(
            [*cnnkit, "train", "--dataset", "sample", "--recipe", "default", "--out", str(run_dir), "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run([*cnnkit, "export", str(run_dir), "--json"], check=True, stdout=subprocess.DEVNULL)
    return run_dir


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
    return path
