"""KServe V2 over gRPC beside the HTTP binary path on one `cnnkit serve` (`--grpc-port`), measured by NVIDIA's
perf_analyzer (`-i grpc` and `-i http`, binary UINT8 tensors, one image per request) at each concurrency, the two
protocols alternating round by round (who goes first rotates), against the same server process.

    python benchmarks/serve_grpc.py [--model M.onnx] [--concurrency 1,16,64] [--rounds 3] [--interval-ms 2000]
                                    [--out serve_grpc_cpu.json]

Writes benchmarks/results/serve_grpc_cpu.json (or --out): per protocol and concurrency the median inferences/s of
the rounds (and every round), p50/p99, and gRPC's ratio to HTTP. Load generator and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import ensure_model, machine, save
from perf_analyzer import measure

PROTOCOLS = ("http", "grpc")


def start(model: Path) -> tuple[subprocess.Popen, str, str]:
    """`cnnkit serve MODEL --port 0 --grpc-port 0`; its HTTP url and gRPC host:port, read from what it says."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "serve", str(model), "--port", "0", "--grpc-port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = grpc = None
    for line in proc.stdout:
        if "Uvicorn running on " in line:
            url = line.split("Uvicorn running on ")[1].split()[0]
        if "gRPC on " in line:
            grpc = line.split("gRPC on ")[1].split()[0]
            break
    if not (url and grpc):
        raise SystemExit("the server did not start")
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)  # keep its output drained
    for _ in range(600):
        if httpx.get(url + "/readyz", timeout=2).status_code == 200:
            return proc, url, grpc
        time.sleep(0.1)
    raise SystemExit("the server did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=2000)
    ap.add_argument("--out", default="serve_grpc_cpu.json", help="the results file's name (one per CPU kind)")
    a = ap.parse_args()
    concurrency = [int(c) for c in a.concurrency.split(",")]
    rounds: dict[str, dict[int, list[dict]]] = {p: {c: [] for c in concurrency} for p in PROTOCOLS}
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or ensure_model(Path(tmp)) / "model.onnx"
        proc, url, grpc = start(model)
        try:
            for k in range(a.rounds):
                for c in concurrency:
                    order = PROTOCOLS if (k + c) % 2 == 0 else PROTOCOLS[::-1]
                    for p in order:
                        (row,) = measure(url if p == "http" else grpc, [c], a.interval_ms, Path(tmp), protocol=p)
                        rounds[p][c].append(row)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    results = {
        p: [
            {
                "concurrency": c,
                "inferences_per_s": statistics.median(r["inferences_per_s"] for r in rows),
                "p50_ms": statistics.median(r["p50_ms"] for r in rows),
                "p99_ms": statistics.median(r["p99_ms"] for r in rows),
                "rounds_inferences_per_s": [r["inferences_per_s"] for r in rows],
            }
            for c, rows in by_c.items()
        ]
        for p, by_c in rounds.items()
    }
    ratio = {
        str(h["concurrency"]): round(g["inferences_per_s"] / h["inferences_per_s"], 3)
        for h, g in zip(results["http"], results["grpc"])
    }
    save(
        a.out,
        {
            "machine": machine(),
            "command": "python benchmarks/serve_grpc.py " + " ".join(sys.argv[1:]),
            "tool": "perf_analyzer (perf-analyzer wheel) -i grpc / -i http, binary UINT8 tensors, one image a request",
            "method": f"one server (--grpc-port); {a.rounds} rounds, the protocols alternating; medians",
            "results": results,
            "grpc_over_http": ratio,
            "note": "load generator and server share this machine's cores",
        },
    )


if __name__ == "__main__":
    main()
