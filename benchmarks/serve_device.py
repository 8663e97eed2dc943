"""`cnnkit serve --device D` under load on 127.0.0.1, for the GPU check (benchmarks/gpu_check.sh).

    python benchmarks/serve_device.py MODEL.onnx [--device cuda] [--clients 1,16,64] [--seconds 3] [--out F]

One server process (the defaults: dynamic batching, V2 and the cnnkit API). Two load generators, one after the
other: the project's asyncio client (benchmarks/serve_load.py: keep-alive connections, one 28x28 digit per request
as a binary UINT8 KServe V2 tensor, the framing tritonclient uses) for --seconds at each concurrency, then NVIDIA's
perf_analyzer (benchmarks/perf_analyzer.py) where PERF_ANALYZER names a runnable one. Records what the server says
it runs (/v1/model: engines, ONNX Runtime's providers). Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine
from serve_load import load, start


def v2_requests(name: str, n: int = 64) -> list[bytes]:
    from cnnkit.data.datasets import load_sample
    from serve_protocols import v2_request

    return [v2_request(img, name) for img in load_sample().test_images[:n, 0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--interval-ms", type=int, default=2000, help="perf_analyzer's measurement interval")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    clients = [int(c) for c in a.clients.split(",")]
    proc, url = start(a.model, [], device=a.device)
    try:
        served = httpx.get(url + "/v1/model", timeout=10).json()
        name = f"cnnkit-{served['metadata']['dataset']['name']}"  # serve's default --model-name
        requests = v2_requests(name)
        rows = []
        for c in clients:
            asyncio.run(load(url, requests, c, min(1.0, a.seconds)))  # warm-up
            r = asyncio.run(load(url, requests, c, a.seconds))
            rows.append({"concurrency": c, "inferences_per_s": r["requests_per_s"], "p50_ms": r["p50_ms"],
                         "p99_ms": r["p99_ms"], "errors": r["errors"], "requests": r["requests"]})  # fmt: skip
            print(rows[-1], flush=True)
        tool = os.environ.get("PERF_ANALYZER")
        if tool and (Path(tool).is_file() or shutil.which(tool)):
            from perf_analyzer import measure

            with tempfile.TemporaryDirectory() as tmp:
                try:
                    pa = {"rows": measure(url, clients, a.interval_ms, Path(tmp), name=name)}
                except (subprocess.CalledProcessError, OSError) as exc:
                    pa = {"not_run": f"perf_analyzer failed: {exc}"}
        else:
            pa = {"not_run": "PERF_ANALYZER is not set to a runnable perf_analyzer"}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    report = {
        "machine": machine(),
        "command": "python benchmarks/serve_device.py " + " ".join(sys.argv[1:]),
        "server": {
            "device": a.device,
            "providers": served.get("providers"),
            "engines": served.get("engines"),
            "max_batch": served.get("max_batch"),
            "model": str(a.model),
        },  # fmt: skip
        "tool": "asyncio V2 client (benchmarks/serve_load.py), binary UINT8 tensors, keep-alive",
        "seconds_per_level": a.seconds,
        "rows": rows,
        "perf_analyzer": pa,
    }
    text = json.dumps(report, indent=2) + "\n"
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
