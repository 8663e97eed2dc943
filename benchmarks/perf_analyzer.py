"""NVIDIA's perf_analyzer (the load generator Triton users measure V2 servers with) against `cnnkit serve`,
unchanged: it reads the model's configuration from /v2/models/<name>/config and sends binary UINT8 tensors.

    python benchmarks/perf_analyzer.py [--model M.onnx] [--concurrency 1,4,16,64] [--interval-ms 3000]

perf_analyzer runs through ../shared/tools/perf-analyzer.sh (its binary needs a newer glibc than Debian 12's);
PERF_ANALYZER names another script or the binary itself (where the glibc is new enough, as on the GPU machine).
Each server configuration is its own process on 127.0.0.1; load generator and server share the machine's cores.
Writes benchmarks/results/perf_analyzer.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import ensure_model, machine, save
from serve_load import start

ROOT = Path(__file__).resolve().parents[1]
TOOL = os.environ.get("PERF_ANALYZER", str(ROOT.parent / "shared" / "tools" / "perf-analyzer.sh"))
SERVERS = {"cnnkit serve (defaults)": [], "cnnkit serve --max-batch 1 (no batching)": ["--max-batch", "1"]}
NAME = "cnnkit-mnist-sample"
# perf_analyzer's default (3 windows within 10% of each other, at most 10 windows) fails outright on this shared
# machine at low loads; 25% over at most 20 windows: the figure is the average of the last 3 windows either way
STABILITY = ["--stability-percentage", "25", "--max-trials", "20"]


def measure(
    url: str, concurrency: list[int], interval_ms: int, tmp: Path, name: str = NAME, protocol: str = "http"
) -> list[dict]:
    """perf_analyzer at each concurrency against `url` (host:port for -i grpc) over `protocol` (http or grpc)."""
    rows = []
    for c in concurrency:
        out = tmp / f"c{c}.csv"
        cmd = [*(["bash"] if TOOL.endswith(".sh") else []), TOOL, "-m", name, "-u", url.removeprefix("http://"),
               "-i", protocol, "--concurrency-range",
               f"{c}:{c}", "--measurement-interval", str(interval_ms), "-f", str(out), *STABILITY]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        (row,) = list(csv.DictReader(out.open()))
        rows.append(
            {
                "concurrency": c,
                "inferences_per_s": float(row["Inferences/Second"]),
                "p50_ms": float(row["p50 latency"]) / 1000,
                "p99_ms": float(row["p99 latency"]) / 1000,
            }
        )
        print(c, rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--interval-ms", type=int, default=3000)
    a = ap.parse_args()
    concurrency = [int(c) for c in a.concurrency.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or ensure_model(Path(tmp)) / "model.onnx"
        for name, args in SERVERS.items():
            proc, url = start(model, args)
            try:
                results[name] = measure(url, concurrency, a.interval_ms, Path(tmp))
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    save(
        "perf_analyzer.json",
        {
            "machine": machine(),
            "command": "python benchmarks/perf_analyzer.py " + " ".join(sys.argv[1:]),
            "tool": "perf_analyzer (perf-analyzer wheel), -i http, binary UINT8 tensors, one image per request",
            "results": results,
            "note": "load generator and server share this machine's cores",
        },
    )


if __name__ == "__main__":
    main()
