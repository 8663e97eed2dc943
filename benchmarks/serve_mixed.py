"""`cnnkit serve` under mixed hostile and legitimate load at once: are the legitimate clients served, and right?

    python benchmarks/serve_mixed.py [--model M.onnx] [--seconds 120] [--clients 8]

One server with default limits and `--health-port`, on 127.0.0.1. For --seconds, all at once:
- legitimate clients: --clients keep-alive connections. Each sends 64 digits of the bundled sample's test split in
  turn, half as PNG uploads to /v1/predict and half as binary V2 tensors. An answer counts as right when it is a
  200 whose class is the one the same server gave for that image before the attack began.
- attackers: the attacks of serve_attacks.py, at a smaller scale each (ATTACKS below), together. Each one repeats
  until the end, and every status it is answered is counted.
- /healthz probed every 20 ms on a fresh connection, on the main port and on --health-port, each probe in a
  process of its own (serve_attacks.Prober); the server's peak RSS, its health process included.
Targets: /healthz p99 under 100 ms with no failed probe, peak RSS under 512 MB, no 500 to anyone (503 sheds are
counted). Legitimate success rate and latency are reported. Writes benchmarks/results/serve_mixed.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import serve_attacks as sa
from _common import ensure_model, machine, save
from serve_load import free_port, http_post, start

NAME = "cnnkit-mnist-sample"
V2 = f"/v2/models/{NAME}/infer"


def legitimate_requests(n: int = 64) -> list[tuple[str, bytes]]:
    """(kind, request) for `n` test digits spread over the classes: PNG uploads and binary V2 tensors in turn."""
    from cnnkit.data.datasets import load_sample

    ds = load_sample()
    pick = np.random.default_rng(0).permutation(len(ds.test_images))[:n]
    out = []
    for k, i in enumerate(pick):
        pixels = ds.test_images[i]
        if k % 2 == 0:
            buf = io.BytesIO()
            Image.fromarray(pixels[0]).save(buf, "PNG")
            out.append(("v1", http_post("/v1/predict?top_k=1", buf.getvalue(), {"Content-Type": "image/png"})))
        else:
            tensor = {"name": "images", "datatype": "UINT8", "shape": [1, *pixels.shape]}
            header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": pixels.size}}]}).encode()
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
            out.append(("v2", http_post(V2, header + pixels.tobytes(), headers)))
    return out


def answered_class(kind: str, body: bytes) -> int:
    doc = json.loads(body)
    if kind == "v1":
        return int(doc["predictions"][0]["index"])
    return int(np.argmax(doc["outputs"][0]["data"]))


async def exchange(reader, writer, request: bytes) -> tuple[int, bytes, bool]:
    """One request on a keep-alive connection: (status, body, whether the server closes the connection)."""
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.lower().split(b"\r\n")
    length = next(int(ln.split(b":", 1)[1]) for ln in lines if ln.startswith(b"content-length:"))
    body = await asyncio.wait_for(reader.readexactly(length), 30)
    return int(head.split(b" ", 2)[1]), body, b"connection: close" in lines


async def expected_classes(host: str, port: int, requests: list[tuple[str, bytes]]) -> list[int]:
    """What the idle server answers for each legitimate request: the answer every later one must match."""
    out = []
    for kind, req in requests:
        reader, writer = await asyncio.open_connection(host, port)
        status, body, _ = await exchange(reader, writer, req)
        writer.close()
        if status != 200:
            raise SystemExit(f"the idle server answered {status} to a legitimate {kind} request")
        out.append(answered_class(kind, body))
    return out


async def legitimate(host: str, port: int, deadline: float, requests, expected, first: int, step: int, log) -> None:
    """One client: the requests in turn on a keep-alive connection (a new one when the server closes it)."""
    reader = writer = None
    k = first
    while time.perf_counter() < deadline:
        kind, req = requests[k % len(requests)]
        want = expected[k % len(requests)]
        k += step
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            status, body, closes = await exchange(reader, writer, req)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, StopIteration, ValueError):
            log(kind, "connection failed", False, time.perf_counter() - t0)
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        right = status == 200 and answered_class(kind, body) == want
        log(kind, str(status) if status != 200 or right else "200 wrong class", right, time.perf_counter() - t0)
        if closes:
            writer.close()
            reader = writer = None


async def _slowloris(host: str, port: int, deadline: float, count, connections: int) -> None:
    """`connections` slow heads (a byte a second); each one answered (a 408 at the head deadline) starts again."""

    async def one() -> None:
        while time.perf_counter() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /healthz HTTP/1.1\r\n")
                answer = asyncio.create_task(reader.read(64))
                while not answer.done() and time.perf_counter() < deadline:
                    writer.write(b"X")
                    await asyncio.wait([answer], timeout=1)
                if answer.done():
                    got = answer.result()
                    count(int(got[9:12]) if got[:5] == b"HTTP/" else -1)
                else:
                    answer.cancel()
                    count("held_open")
                writer.close()
            except OSError:
                count(-1)
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one() for _ in range(connections)))


async def _slow_bodies(host: str, port: int, deadline: float, count, connections: int) -> None:
    """`connections` V2 bodies of 1,000 declared bytes sent a byte a second; each one answered (a 503 at the read
    deadline) starts again; those still sending at the end are counted as held open."""

    async def one() -> None:
        while time.perf_counter() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(f"POST {V2} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode())
                writer.write(b"Content-Length: 1000\r\n\r\n")
                answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
                while not answer.done() and time.perf_counter() < deadline:
                    writer.write(b" ")
                    await asyncio.wait([answer], timeout=1)
                if not answer.done():
                    answer.cancel()
                    count("held_open")
                elif answer.exception() is not None:
                    count(-1)
                else:
                    count(int(answer.result().split(b" ", 2)[1]))
                writer.close()
            except OSError:
                count(-1)
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one() for _ in range(connections)))


def _post(path: str, body: bytes, content_type: str) -> bytes:
    return http_post(path, body, {"Content-Type": content_type})


def attacks() -> dict:
    """name -> coroutine function (host, port, deadline, count): each repeats its attack until the deadline."""
    big_json = sa._v2_json_body(8 * 1024 * 1024 - 1024)
    strings = json.dumps(sa._v2_doc(sa.STRINGS)).encode()
    outputs = json.dumps(sa._v2_doc([0] * 784, outputs=[{"name": "logits"}] * 4000)).encode()
    jpeg = "image/jpeg"
    big_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    fixed = {  # name: (request, clients)
        "decompression bombs (2 clients)": (sa.bomb_request(), 2),
        "progressive JPEG repeating one scan 3,000 times (1 client)": (_post("/v1/predict", sa.scan_bomb(), jpeg), 1),
        "JPEG of a million empty APP segments (1 client)": (_post("/v1/predict", sa.marker_bomb(), jpeg), 1),
        "JSON nested 100,000 deep (2 clients)": (_post("/v1/predict", b"[" * 100_000, "application/json"), 2),
        "V2 output asked for 4,000 times (2 clients)": (_post(V2, outputs, "application/json"), 2),
        "V2 string data (2 clients)": (_post(V2, strings, "application/json"), 2),
        "V2 8 MB JSON bodies (2 clients)": (_post(V2, big_json, "application/json"), 2),
        "4.2 MB PNG uploads (16 clients)": (_post("/v1/predict", sa._noise_png(), "image/png"), 16),
        "100 KB request heads (2 clients)": (big_head, 2),
    }  # fmt: skip
    out = {
        name: (lambda host, port, deadline, count, req=req, n=n: sa._repeat(host, port, req, n, deadline, count))
        for name, (req, n) in fixed.items()
    }
    out["V2 bodies at 1 byte/s (50 connections)"] = lambda h, p, d, c: _slow_bodies(h, p, d, c, 50)
    out["slow request heads, slowloris (100 connections)"] = lambda h, p, d, c: _slowloris(h, p, d, c, 100)
    out["200 MB chunked upload (1 client)"] = lambda h, p, d, c: sa._chunked_upload(h, p, d, c, {})
    return out


def _summary(statuses: dict, right: int, latencies: list[float]) -> dict:
    total = sum(statuses.values())
    ms = np.array(latencies) * 1e3
    return {
        "requests": total,
        "right": right,
        "success_rate": right / total if total else None,
        "statuses": statuses,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "max_ms": float(ms.max()) if len(ms) else None,
    }


async def run(url: str, pid: int, health_port: int, seconds: float, clients: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    requests = legitimate_requests()
    expected = await expected_classes(host, int(port), requests)
    hostile = attacks()
    probes = main_probe, health_probe = sa.Prober(host, int(port), pid), sa.Prober(host, health_port, pid)
    for p in probes:
        p.ready()
    for p in probes:
        p.go.set()
    deadline = time.perf_counter() + seconds
    legit: dict[str, dict] = {"v1": {}, "v2": {}}  # per kind: status -> count
    latencies: dict[str, list[float]] = {"v1": [], "v2": []}
    right = {"v1": 0, "v2": 0}

    def log(kind: str, status: str, ok: bool, seconds_taken: float) -> None:
        legit[kind][status] = legit[kind].get(status, 0) + 1
        right[kind] += ok
        latencies[kind].append(seconds_taken)

    answers: dict[str, dict] = {name: {} for name in hostile}

    def counter(name: str):
        def count(status) -> None:
            answers[name][str(status)] = answers[name].get(str(status), 0) + 1

        return count

    t0 = time.perf_counter()
    await asyncio.gather(
        *(legitimate(host, int(port), deadline, requests, expected, i, clients, log) for i in range(clients)),
        *(attack(host, int(port), deadline, counter(name)) for name, attack in hostile.items()),
    )
    elapsed = time.perf_counter() - t0
    row = main_probe.result()
    health = health_probe.result()
    row.update({f"health_port_{k.removeprefix('healthz_')}": v for k, v in health.items() if k.startswith("healthz_")})
    both = {s: legit["v1"].get(s, 0) + legit["v2"].get(s, 0) for s in {*legit["v1"], *legit["v2"]}}
    legitimate_row = _summary(both, sum(right.values()), latencies["v1"] + latencies["v2"])
    legitimate_row["requests_per_s"] = legitimate_row["requests"] / seconds
    by_kind = {
        "v1 PNG uploads": _summary(legit["v1"], right["v1"], latencies["v1"]),
        "V2 binary tensors": _summary(legit["v2"], right["v2"], latencies["v2"]),
    }
    five_hundreds = sum(n for a in [both, *answers.values()] for s, n in a.items() if s.startswith("5") and s != "503")
    return {
        "seconds": elapsed,
        "legitimate": legitimate_row,
        "legitimate_by_kind": by_kind,
        "probes": row,
        "attack_answers": answers,
        "five_hundreds_not_shedding": five_hundreds,
        "shed_503": sum(a.get("503", 0) for a in [both, *answers.values()]),
        "within_target": {
            "healthz_p99_under_100ms_no_failed_probe": row["healthz_p99_ms"] < 100 and row["healthz_failures"] == 0,
            "health_port_p99_under_100ms_no_failed_probe": row["health_port_p99_ms"] < 100
            and row["health_port_failures"] == 0,
            "peak_rss_under_512mb": row["server_rss_peak_mb"] < 512,
            "no_500": five_hundreds == 0,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--clients", type=int, default=8, help="legitimate keep-alive clients")
    ap.add_argument("--no-save", action="store_true", help="print the results, write no file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or ensure_model(Path(tmp)) / "model.onnx"
        health_port = free_port()
        proc, url = start(model, ["--health-port", str(health_port)])
        try:
            result = asyncio.run(run(url, proc.pid, health_port, a.seconds, a.clients))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    keys = ("legitimate", "legitimate_by_kind", "probes", "within_target", "shed_503")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    if a.no_save:
        return
    save(
        "serve_mixed.json",
        {
            "machine": machine(),
            "command": "python benchmarks/serve_mixed.py " + " ".join(sys.argv[1:]),
            "method": f"one server (default limits, --health-port); {a.clients} legitimate keep-alive clients and "
            f"{len(attacks())} attacks at once for {a.seconds:g} s; /healthz probed every 20 ms on fresh "
            "connections from processes of their own",
            **result,
            "target": "/healthz p99 < 100 ms with no failed probe, peak RSS < 512 MB, no 500 (503 sheds counted); "
            "legitimate success rate and latency reported",
            "note": "legitimate clients, attackers, probes and server share this machine's 2 cores",
        },
    )


if __name__ == "__main__":
    main()
