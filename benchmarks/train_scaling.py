"""Training on this CPU: 1 process x N threads against N processes x 1 thread (torchrun, gloo), side by side.

Each configuration trains the default recipe on the bundled sample with the same seed and global batch, through
the CLI (`cnnkit train` and `cnnkit train --nproc N`), in alternating order; images/s is taken over the epochs
after the first (start-up and first-epoch warm-up excluded). Writes benchmarks/results/train_scaling_cpu.json.

    python benchmarks/train_scaling.py [--procs 2] [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, save


def run(procs: int, threads: int, epochs: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "cnnkit",
        "train",
        "--dataset",
        "sample",
        "--recipe",
        "default",
        "--epochs",
        str(epochs),
    ]
    cmd += ["--device", "cpu", "--out", str(out), "--json"]
    if procs > 1:
        cmd += ["--nproc", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    r = json.loads(proc.stdout)
    later = r["epochs"][1:]
    seconds = sum(e["seconds"] for e in later)
    images = sum(e["images_per_s"] * e["seconds"] for e in later)
    return {
        "processes": procs,
        "threads_per_process": threads,
        "images_per_s": images / seconds,
        "test_accuracy": r["test_accuracy"],
        "val_accuracy": r["val_accuracy"],
        "precision": r["precision"],
        "epoch_seconds": [round(e["seconds"], 3) for e in r["epochs"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    configs = [(1, a.procs), (a.procs, 1)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for i, (p, t) in enumerate(configs if r % 2 == 0 else configs[::-1]):
                row = run(p, t, a.epochs, Path(tmp) / f"r{r}-{i}")
                print(json.dumps(row))
                rows.append({"round": r, **row})
    summary = {}
    for p, t in configs:
        mine = [x for x in rows if x["processes"] == p]
        summary[f"{p}proc_x_{t}thread"] = {
            "images_per_s_mean": sum(x["images_per_s"] for x in mine) / len(mine),
            "test_accuracy": [x["test_accuracy"] for x in mine],
        }
    one, many = (summary[f"{p}proc_x_{t}thread"]["images_per_s_mean"] for p, t in configs)
    save(
        "train_scaling_cpu.json",
        {
            "machine": machine(),
            "command": "python benchmarks/train_scaling.py " + " ".join(sys.argv[1:]),
            "epochs": a.epochs,
            "rows": rows,
            "summary": summary,
            f"ratio_{a.procs}proc_over_1proc": many / one,
        },
    )


if __name__ == "__main__":
    main()
