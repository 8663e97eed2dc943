"""`cnnkit serve` /v1/predict vs its KServe V2 endpoint vs the Triton engine: a concurrency sweep, one model.

    python benchmarks/serve_protocols.py [--model M.onnx] [--clients 1,4,16,64] [--seconds 5]
                                         [--triton-python .venv-triton/bin/python]

Each target gets its own server process on 127.0.0.1 with the same batching limits (max batch 64, max delay
2 ms); N asyncio clients send one 28x28 digit per request over keep-alive connections, in each protocol's usual
form: /v1/predict a PNG file (the server decodes it), V2 a binary UINT8 tensor (tritonclient's default framing,
Inference-Header-Content-Length). The Triton engine runs from a venv with cnnkit[triton] (make triton-check makes
one); without it that column is left out, saying so. Writes benchmarks/results/serve_protocols.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, ensure_model, machine, save
from serve_load import free_port, http_post, load, png_request, start

LIMITS = ["--max-batch", "64", "--max-delay-ms", "2"]
NAME = "bench"


def v2_request(pixels, name: str = NAME) -> bytes:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [1, 1, 28, 28],
                    "parameters": {"binary_data_size": 784},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return http_post(
        f"/v2/models/{name}/infer",
        header + pixels.tobytes(),
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for target, rows in results.items():
        xs = [r["clients"] for r in rows]
        a.plot(xs, [r["requests_per_s"] for r in rows], marker="o", label=target)
        b.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=target)
    a.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s", title="throughput")
    b.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency (ms)", title="tail latency")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--triton-python", default=".venv-triton/bin/python")
    a = ap.parse_args()
    sweep = [int(c) for c in a.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or ensure_model(Path(tmp)) / "model.onnx"
        from cnnkit.data.datasets import load_sample

        digits = load_sample().test_images[:200, 0]
        pngs = []
        for img in digits:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs.append(png_request(buf.getvalue()))
        tensors = [v2_request(img) for img in digits]
        targets = {
            "cnnkit /v1/predict (PNG)": (sys.executable, ["--model-name", NAME], pngs, "/readyz"),
            "cnnkit /v2 infer (binary tensor)": (sys.executable, ["--model-name", NAME], tensors, "/readyz"),
        }
        skipped = None
        if os.access(a.triton_python, os.X_OK):
            args = ["--engine", "triton", "--model-name", NAME]
            args += ["--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
            targets["triton engine /v2 infer (binary tensor)"] = (a.triton_python, args, tensors, "/v2/health/ready")
        else:
            skipped = f"triton engine: {a.triton_python} not found (make triton-check creates it)"
            print(skipped)
        results: dict[str, list] = {}
        for target, (python, args, requests, ready) in targets.items():
            proc, url = start(model, [*LIMITS, *args], python=python, ready_path=ready)
            try:
                asyncio.run(load(url, requests[:20], 4, 1.0))  # warm-up, not reported
                results[target] = []
                for n in sweep:
                    row = {"clients": n, **asyncio.run(load(url, requests, n, a.seconds))}
                    print(target, {k: row[k] for k in ("clients", "requests_per_s", "p50_ms", "p99_ms", "errors")})
                    results[target].append(row)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    at16 = {t: next((r["requests_per_s"] for r in rows if r["clients"] == 16), None) for t, rows in results.items()}
    v1, v2 = at16.get("cnnkit /v1/predict (PNG)"), at16.get("cnnkit /v2 infer (binary tensor)")
    plot(results, RESULTS / "serve_protocols.png")
    save(
        "serve_protocols.json",
        {
            "machine": machine(),
            "command": "python benchmarks/serve_protocols.py " + " ".join(sys.argv[1:]),
            "seconds_per_point": a.seconds,
            "server_limits": LIMITS,
            "results": results,
            "requests_per_s_at_16_clients": at16,
            "ratio_v2_over_v1_at_16": v2 / v1 if v1 and v2 else None,
            "skipped": skipped,
            "note": "client and servers share this machine's cores; one server runs at a time",
        },
    )


if __name__ == "__main__":
    main()
