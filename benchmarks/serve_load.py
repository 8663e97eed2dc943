"""Load test of `cnnkit serve` on 127.0.0.1: N concurrent clients for a bounded time, batching on vs off.

    python benchmarks/serve_load.py [--model runs/demo/model.onnx] [--clients 32] [--seconds 10]

Each mode starts its own server process (the defaults: --max-batch 64 --max-delay-ms 0; a 2 ms delay; batching off:
--max-batch 1; the h11 parser), then N asyncio clients post single PNG digits over keep-alive connections.
Reports requests/s, p50/p99 latency and errors; writes benchmarks/results/serve_load.json. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import ensure_model, machine, save

MODES = {
    "defaults": [],  # --max-batch 64 --max-delay-ms 0: batches what queues while the model runs
    "delay_2ms": ["--max-delay-ms", "2"],  # waits up to 2 ms for more while requests arrive together
    "batching_off": ["--max-batch", "1"],
    "h11": ["--http", "h11"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    model: Path, args: list[str], python: str = sys.executable, ready_path: str = "/readyz", device: str = "cpu"
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "cnnkit", "serve", str(model), "--port", str(port), "--device", device, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            if httpx.get(url + ready_path, timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not become ready")


def http_post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 POST request (keep-alive), built once and sent many times."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def png_request(body: bytes) -> bytes:
    return http_post("/v1/predict", body, {"Content-Type": "image/png"})


async def _post(reader, writer, request: bytes) -> int:
    """One keep-alive HTTP/1.1 POST on raw asyncio streams (far lighter than a full client library, which
    matters when the load generator shares two cores with the server)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return status


async def load(url: str, requests: list[bytes], clients: int, seconds: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    latencies, errors, statuses = [], 0, {}
    stop_at = time.perf_counter() + seconds

    async def client(i: int):
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        k = i
        try:
            while time.perf_counter() < stop_at:
                request = requests[k % len(requests)]
                k += clients
                t0 = time.perf_counter()
                try:
                    status = await _post(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "errors": errors,
        "statuses": statuses,
        "seconds": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: train+export one in a temp dir)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default="serve_load.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or ensure_model(Path(tmp)) / "model.onnx"
        from cnnkit.data.datasets import load_sample

        bodies = []
        for img in load_sample().test_images[:200, 0]:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            bodies.append(png_request(buf.getvalue()))
        results = {}
        for mode, args in MODES.items():
            proc, url = start(model, args)
            try:
                asyncio.run(load(url, bodies[:20], a.clients, 1.0))  # warm-up, not reported
                results[mode] = {"server_args": args, **asyncio.run(load(url, bodies, a.clients, a.seconds))}
                print(mode, {k: results[mode][k] for k in ("requests_per_s", "p50_ms", "p99_ms", "errors")})
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    ratio = results["defaults"]["requests_per_s"] / results["batching_off"]["requests_per_s"]
    print(f"defaults / batching off: {ratio:.2f}x requests/s")
    save(
        a.out,
        {
            "machine": machine(),
            "clients": a.clients,
            "seconds": a.seconds,
            "results": results,
            "ratio_defaults_over_batching_off": ratio,
            "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
            "note": "client and server share this machine's cores; the client's CPU use is part of the picture",
        },
    )


if __name__ == "__main__":
    main()
