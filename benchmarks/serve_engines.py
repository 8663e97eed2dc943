"""`cnnkit serve` on each engine it can run, side by side: ONNX Runtime, OpenVINO (LATENCY: one batch at a time),
OpenVINO's THROUGHPUT mode with two batches in flight (`--requests 2`), and engine auto (what `optimize` recorded
beside the model), at 16 and 64 clients posting single PNG digits over keep-alive connections.

    python benchmarks/serve_engines.py --model RUN/model.onnx [--clients 16,64] [--rounds 3] [--seconds 4]

Every server is started once and kept; the rounds alternate between them (who goes first rotates), each round a
fresh load of `--seconds` per server and client count; medians over rounds, and each row's ratio to ONNX
Runtime's paired round by round. Client and server share the machine's cores. Writes
benchmarks/results/serve_engines_cpu_<kind>.json (kind: the CPU's instruction sets, as peers_inference names it).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save
from peers_inference import cpu_kind
from serve_load import load, png_request, start

SERVERS = {
    "onnxruntime": ["--engine", "onnxruntime"],
    "openvino": ["--engine", "openvino"],
    "openvino, 2 requests in flight": ["--engine", "openvino", "--requests", "2"],
    "openvino, 2 requests in flight, 2 threads": ["--engine", "openvino", "--requests", "2", "--threads", "2"],
    "auto (optimize's record)": [],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--clients", default="16,64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    a = ap.parse_args()
    from cnnkit.data.datasets import load_sample

    bodies = []
    for img in load_sample().test_images[:200, 0]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        bodies.append(png_request(buf.getvalue()))
    clients = [int(c) for c in a.clients.split(",")]
    servers = {name: start(a.model, args) for name, args in SERVERS.items()}
    runs: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in clients} for n in servers}
    try:
        for _, url in servers.values():
            asyncio.run(load(url, bodies[:20], 16, 1.0))  # warm-up, not reported
        for r in range(a.rounds):
            order = list(servers)[r % len(servers) :] + list(servers)[: r % len(servers)]
            for n in clients:
                for name in order:
                    runs[name][n].append(asyncio.run(load(servers[name][1], bodies, n, a.seconds)))
                    print(r, n, name, round(runs[name][n][-1]["requests_per_s"], 1), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    rows = []
    for name in servers:
        for n in clients:
            rates = [x["requests_per_s"] for x in runs[name][n]]
            base = [x["requests_per_s"] for x in runs["onnxruntime"][n]]
            rows.append(
                {
                    "server": name,
                    "server_args": SERVERS[name],
                    "clients": n,
                    "requests_per_s": round(statistics.median(rates), 1),
                    "requests_per_s_rounds": [round(v, 1) for v in rates],
                    "vs_onnxruntime": round(statistics.median(x / y for x, y in zip(rates, base)), 3),
                    "p99_ms": round(statistics.median(x["p99_ms"] for x in runs[name][n]), 2),
                    "errors": sum(x["errors"] for x in runs[name][n]),
                }
            )
    m = machine()
    save(
        f"serve_engines_cpu_{cpu_kind(m['cpu_flags'])}.json",
        {
            "machine": m,
            "model": str(a.model),
            "rows": rows,
            "method": f"{a.rounds} alternating rounds of {a.seconds} s per server and client count; medians; "
            "vs_onnxruntime: the median over rounds of the paired ratio; one PNG digit per request",
        },
    )


if __name__ == "__main__":
    main()
