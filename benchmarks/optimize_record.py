"""`cnnkit optimize` run twice on fresh copies of one run, on this machine: does it pick the same route per batch
size (or record that the two were tied)? The first run's whole report is kept (which file x engine x streams
combinations passed their checks, what each measured, what it chose), and both runs' decisions side by side.

    python benchmarks/optimize_record.py RUN [--repeat 2]   (RUN: a trained run folder; copied, never changed)

Writes benchmarks/results/optimize_cpu_<kind>.json (kind: the CPU's instruction sets, as peers_inference names it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save
from peers_inference import cpu_kind


def optimize_copy(run: Path) -> dict:
    """`cnnkit optimize --select` on a fresh copy of the run's checkpoint; its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        copy.mkdir()
        for name in ("model.safetensors", "checkpoint.json"):
            shutil.copy(run / name, copy / name)
        cmd = [sys.executable, "-m", "cnnkit", "optimize", str(copy), "--select", "--batch-sizes", "1,8,64,256"]
        return json.loads(subprocess.run([*cmd, "--json", "-"], check=True, capture_output=True, text=True).stdout)


def agreement(reports: list[dict], table: str) -> dict[str, dict]:
    """Per batch size: each run's choice, and whether they agree, or every later choice was tied with the first."""
    out = {}
    for bs in reports[0][table]:
        decisions = [r[table].get(bs) or {} for r in reports]
        chosen = [d.get("chosen") for d in decisions]
        first = decisions[0]
        tie = all(c == chosen[0] or c in first.get("tied", []) or c == first.get("leader") for c in chosen[1:])
        out[bs] = {
            "chosen": [r["winners" if table == "decisions" else "in_flight_winners"].get(bs) for r in reports],
            "same": len(set(chosen)) == 1,
            "same_or_tied": tie,
            "noisy": [d.get("noisy") for d in decisions],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    reports = [optimize_copy(a.run) for _ in range(a.repeat)]
    m = machine()
    save(
        f"optimize_cpu_{cpu_kind(m['cpu_flags'])}.json",
        {
            "machine": m,
            "repeat": a.repeat,
            "one_caller": agreement(reports, "decisions"),
            "in_flight": agreement(reports, "in_flight_decisions"),
            "selected": [r["selected"] for r in reports],
            "decisions": [{"one_caller": r["decisions"], "in_flight": r["in_flight_decisions"]} for r in reports],
            "optimize": reports[0],
        },
    )


if __name__ == "__main__":
    main()
