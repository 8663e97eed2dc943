"""`cnnkit optimize` on a copy of a run, its whole report kept as a result file: which file x engine x streams
combinations passed their checks, what each measured, and what it chose per batch size.

    python benchmarks/optimize_record.py RUN      (RUN: a trained run folder; it is copied, never changed)

Writes benchmarks/results/optimize_cpu.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save


def main() -> None:
    run = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        copy.mkdir()
        for name in ("model.safetensors", "checkpoint.json"):
            shutil.copy(run / name, copy / name)
        cmd = [sys.executable, "-m", "cnnkit", "optimize", str(copy), "--select", "--batch-sizes", "1,8,64,256"]
        report = json.loads(subprocess.run([*cmd, "--json", "-"], check=True, capture_output=True, text=True).stdout)
    save(
        "optimize_cpu.json",
        {
            "machine": machine(),
            "command": "python benchmarks/optimize_record.py " + " ".join(sys.argv[1:]),
            "optimize": report,
        },
    )


if __name__ == "__main__":
    main()
