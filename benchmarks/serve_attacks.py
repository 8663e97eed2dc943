"""`cnnkit serve` under attack: /healthz latency and the server's memory while each attack runs.

    python benchmarks/serve_attacks.py [--model M.onnx] [--seconds 6]
    python benchmarks/serve_attacks.py --table      # the markdown table of docs/BENCHMARKS.md, from the results

A fresh server (default limits) on 127.0.0.1 for each attack; a probe sends GET /healthz every 20 ms on its own
connection while the attackers run, and the server's resident memory is sampled from /proc every 50 ms. Attacks:
decompression bombs (multipart requests of twelve 13000x13000 1-bit PNGs), a 200 MB chunked upload, 100 uploads
held open half-sent (8 MB declared each), JSON nested 100,000 deep, and (issue 21) V2 requests asking for an output
4,000 times, V2 and /v1 string data that a padded array would make 2 GB, V2 bodies at 1 byte/s, 8 MB V2 JSON, 128
clients uploading 4.2 MB PNGs at once, 100 KB request heads, and slow request heads (slowloris, for 12 s: past the
server's 10 s head deadline). Targets: /healthz p99 under 100 ms, the server's peak RSS (VmHWM, its --health-port
process included) under 512 MB, and no 500. Writes benchmarks/results/serve_attacks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, ensure_model, machine, save
from cnnkit.serve.config import ServeConfig
from serve_load import free_port, http_post, start

HEAD_TIMEOUT_S = ServeConfig().head_timeout_s  # `cnnkit serve`'s default --head-timeout-s
SLOWLORIS_S = HEAD_TIMEOUT_S + 2.0  # the slow heads attack outlasts it, so what the server answers is counted


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), in MB: the server's and its child processes'
    (the --health-port process) together."""
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for p in [pid, *map(int, children)]:
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(ln.split()[1]) / 1024 for ln in lines if ln.startswith(field + ":")), 0.0)
    return total


async def probe(host: str, port: int, stop: asyncio.Event, pid: int) -> dict:
    """/healthz every 20 ms on a fresh connection each time (as a kubelet or a load balancer probes), and memory
    every 50 ms. A probe fails when it cannot connect, or gets no answer, within 2 s."""
    lat, failures, peak = [], 0, rss_mb(pid)

    async def memory() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.05)

    mem = asyncio.create_task(memory())
    while not stop.is_set():
        t0 = time.perf_counter()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            if not head.startswith(b"HTTP/1.1 200"):
                raise OSError(head[:40])
            n = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
            await asyncio.wait_for(reader.readexactly(n), 2)
            lat.append(time.perf_counter() - t0)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, StopIteration):
            failures += 1
            lat.append(time.perf_counter() - t0)
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(0.02)
    mem.cancel()
    peak = max(peak, rss_mb(pid, "VmHWM"))  # the kernel's own peak: nothing between two samples is missed
    ms = np.array(lat) * 1e3
    return {
        "healthz_requests": len(lat),
        "healthz_failures": failures,
        "healthz_p50_ms": float(np.percentile(ms, 50)),
        "healthz_p99_ms": float(np.percentile(ms, 99)),
        "healthz_max_ms": float(ms.max()),
        "server_rss_peak_mb": peak,
    }


async def send(host: str, port: int, data: bytes, read: bool = True) -> int:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data)
        await writer.drain()
        if not read:
            return 0
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        writer.close()
        return int(head.split(b" ", 2)[1])
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return -1


def bomb_request() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (13000, 13000), 0).save(buf, format="PNG", optimize=True)
    png = buf.getvalue()
    boundary = "cnnkitbomb"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="b{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n"
        for i in range(12)
    )
    body = parts + f"--{boundary}--\r\n".encode()
    return http_post("/v1/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


async def _repeat(host: str, port: int, req: bytes, clients: int, deadline: float, count) -> None:
    """`clients` connections sending `req` again and again until the deadline."""

    async def client() -> None:
        while time.perf_counter() < deadline:
            count(await send(host, port, req))

    await asyncio.gather(*(client() for _ in range(clients)))


async def _bombs(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    await _repeat(host, port, bomb_request(), 4, deadline, count)


def _jpeg(side: int, progressive: bool) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(buf, "JPEG", progressive=progressive)
    return buf.getvalue()


def scan_bomb() -> bytes:
    """A 1024x1024 progressive JPEG (6.8 MB) repeating its smallest scan 3,000 times (a pass over every block each)."""
    data = _jpeg(1024, True)
    sos = [m for m in range(len(data) - 1) if data[m] == 0xFF and data[m + 1] == 0xDA]
    start, end = min(zip(sos, sos[1:] + [data.rindex(b"\xff\xd9")]), key=lambda se: se[1] - se[0])
    return data[:end] + data[start:end] * 3_000 + data[end:]


def marker_bomb() -> bytes:
    """A JPEG carrying a million empty APP5 segments before its frame (4 MB)."""
    data = _jpeg(64, False)
    return data[:2] + b"\xff\xe5\x00\x02" * 1_000_000 + data[2:]


async def _scan_bombs(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    body = scan_bomb()
    await _repeat(host, port, http_post("/v1/predict", body, {"Content-Type": "image/jpeg"}), 2, deadline, count)


async def _marker_bombs(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    body = marker_bomb()
    await _repeat(host, port, http_post("/v1/predict", body, {"Content-Type": "image/jpeg"}), 2, deadline, count)


async def _chunked_upload(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    async def client() -> None:
        while time.perf_counter() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(
                    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                chunk = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
                for _ in range(200):
                    writer.write(chunk)
                    await writer.drain()
                    if reader.at_eof() or len(reader._buffer) > 0:  # the server answered early
                        break
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                status = int(head.split(b" ", 2)[1])
                writer.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                status = -1
            count(status)

    await asyncio.gather(*(client() for _ in range(2)))


async def _held_open(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    writers = []
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection(host, port)
            w.write(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 8000000\r\n\r\n" + b"\0" * 4_000_000
            )
            writers.append(w)
        except OSError:
            count(-1)
    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    for w in writers:
        w.close()
    statuses["held_open"] = len(writers)


async def _deep_json(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    req = http_post("/v1/predict", b"[" * 100_000, {"Content-Type": "application/json"})
    await _repeat(host, port, req, 4, deadline, count)


V2 = "/v2/models/cnnkit-mnist-sample/infer"


def _v2(doc: dict) -> bytes:
    return http_post(V2, json.dumps(doc).encode(), {"Content-Type": "application/json"})


def _v2_doc(data, shape=(1, 1, 28, 28), outputs=None) -> dict:
    doc: dict = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": list(shape), "data": data}]}
    if outputs is not None:
        doc["outputs"] = outputs
    return doc


async def _outputs_x4000(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    req = _v2(_v2_doc([0] * 784, outputs=[{"name": "logits"}] * 4000))
    await _repeat(host, port, req, 4, deadline, count)


STRINGS = ["x" * 25_000] + ["y"] * 20_000  # 125 KB of JSON; as a numpy array of str: 2 GB


async def _v2_strings(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    await _repeat(host, port, _v2(_v2_doc(STRINGS)), 4, deadline, count)


async def _v1_strings(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    req = http_post("/v1/predict", json.dumps({"images": [STRINGS]}).encode(), {"Content-Type": "application/json"})
    await _repeat(host, port, req, 4, deadline, count)


def _v2_json_body(size: int) -> bytes:
    """256 images of numbers as JSON, padded with spaces to `size` bytes: parsing is the work."""
    body = json.dumps(_v2_doc([7] * (256 * 784), shape=(256, 1, 28, 28)), separators=(", ", ": ")).encode()
    return body[:-1] + b" " * (size - 1 - len(body)) + b"}"


async def _v2_big_json(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    req = http_post(V2, _v2_json_body(8 * 1024 * 1024 - 1024), {"Content-Type": "application/json"})
    await _repeat(host, port, req, 4, deadline, count)


async def _v2_largest_json(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    """The largest all-JSON body the server parses for a 28x28 model (256 x 784 x 6 bytes + 64 KB), less a little."""
    req = http_post(V2, _v2_json_body(256 * 784 * 6 + 60 * 1024), {"Content-Type": "application/json"})
    await _repeat(host, port, req, 4, deadline, count)


async def _trickle(host: str, port: int, path: str, deadline: float, count) -> None:
    """A body of 1,000 declared bytes sent one byte a second, until the server answers (its read deadline is 10 s)
    or 15 s have passed, whatever the attack's own length."""
    deadline = max(deadline, time.perf_counter() + 15)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode())
        writer.write(b"Content-Length: 1000\r\n\r\n")
        while time.perf_counter() < deadline:
            writer.write(b" ")
            await writer.drain()
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1)
                count(int(head.split(b" ", 2)[1]))
                writer.close()
                return
            except asyncio.TimeoutError:
                continue
        count("still open")
        writer.close()
    except (OSError, asyncio.IncompleteReadError):
        count(-1)


async def _v2_slow_bodies(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    await asyncio.gather(*(_trickle(host, port, V2, deadline, count) for _ in range(300)))


def _noise_png(side: int = 1200) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()  # about 4.2 MB: noise does not compress


async def _big_pngs(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    await _repeat(
        host, port, http_post("/v1/predict", _noise_png(), {"Content-Type": "image/png"}), 128, deadline, count
    )


async def _big_heads(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    await _repeat(host, port, req, 4, deadline, count)


async def _slow_heads(host: str, port: int, deadline: float, count, statuses: dict) -> None:
    """600 connections sending their request head a byte every second (slowloris), for SLOWLORIS_S at least: past
    the server's head deadline, so what it answers them is counted ("held_open": still open at the end)."""
    deadline = max(deadline, time.perf_counter() + SLOWLORIS_S)
    conns = []
    for _ in range(600):
        try:
            r, w = await asyncio.open_connection(host, port)
            w.write(b"GET /healthz HTTP/1.1\r\n")
            conns.append((asyncio.create_task(r.read(64)), w))
        except OSError:
            count(-1)
    while time.perf_counter() < deadline:
        for answer, w in conns:
            if not answer.done():
                w.write(b"X")
        await asyncio.sleep(1)
    for answer, w in conns:
        if not answer.done():
            answer.cancel()
            count("held_open")
        elif answer.exception() is not None or not answer.result():
            count(-1)  # closed without an answer
        else:
            count(int(answer.result()[9:12]))
        w.close()


async def attack(name: str, host: str, port: int, seconds: float) -> dict:
    statuses: dict = {}

    def count(status) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    await ATTACKS[name](host, port, time.perf_counter() + seconds, count, statuses)
    return {str(k): v for k, v in statuses.items()}


ATTACKS = {
    "decompression bombs (12 x 13000x13000 1-bit PNG per request, 4 clients)": _bombs,
    "progressive JPEG repeating one scan 3,000 times, 6 MB (2 clients)": _scan_bombs,
    "JPEG of a million empty APP segments, 4 MB (2 clients)": _marker_bombs,
    "200 MB chunked upload (2 clients)": _chunked_upload,
    "100 uploads held open half-sent (8 MB declared each)": _held_open,
    "JSON nested 100,000 deep (4 clients)": _deep_json,
    "V2 output asked for 4,000 times (4 clients)": _outputs_x4000,
    "V2 string data, 2 GB as a padded array (4 clients)": _v2_strings,
    "/v1 string pixels, 2 GB as a padded array (4 clients)": _v1_strings,
    "V2 8 MB JSON bodies (4 clients)": _v2_big_json,
    "V2 JSON bodies of the largest size parsed, 1.26 MB (4 clients)": _v2_largest_json,
    "V2 bodies at 1 byte/s (300 connections)": _v2_slow_bodies,
    "4.2 MB PNG uploads (128 clients)": _big_pngs,
    "100 KB request heads (4 clients)": _big_heads,
    "slow request heads, slowloris (600 connections)": _slow_heads,
}


def _probe_process(host: str, port: int, pid: int, go: Any, stop: Any, out: Any) -> None:
    """`probe` in a process of its own, from `go` until `stop` is set; its result put on `out`."""
    out.put("ready")
    go.wait()

    async def main() -> dict:
        done = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.02)
            done.set()

        watcher = asyncio.create_task(watch())
        result = await probe(host, port, done, pid)
        await watcher
        return result

    out.put(asyncio.run(main()))


class Prober:
    """A probe in a process of its own, as a kubelet is: the attackers' event loop, busy pushing their bytes, must
    not delay the probe's own timing."""

    def __init__(self, host: str, port: int, pid: int):
        ctx = multiprocessing.get_context("spawn")
        self.go, self.stop, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        args = (host, port, pid, self.go, self.stop, self.out)
        self.proc = ctx.Process(target=_probe_process, args=args, daemon=True)
        self.proc.start()

    def ready(self) -> None:
        assert self.out.get(timeout=60) == "ready"

    def result(self) -> dict:
        self.stop.set()
        found = self.out.get(timeout=60)
        self.proc.join(timeout=30)
        return found


async def one(name: str, url: str, pid: int, seconds: float, health_port: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    probes = main_probe, health_probe = Prober(host, int(port), pid), Prober(host, health_port, pid)
    for p in probes:
        p.ready()  # a spawned interpreter takes a moment: both start probing as the attack starts
    for p in probes:
        p.go.set()
    if name == "idle":
        await asyncio.sleep(seconds / 2)
        statuses: dict = {}
    else:
        statuses = await attack(name, host, int(port), seconds)
    row = {**main_probe.result(), "attack_statuses": statuses}
    health = health_probe.result()
    row.update({f"health_port_{k.removeprefix('healthz_')}": v for k, v in health.items() if k.startswith("healthz_")})
    row["healthz_within_100ms"] = row["healthz_p99_ms"] <= 100 and row["healthz_failures"] == 0
    row["peak_rss_under_512mb"] = row["server_rss_peak_mb"] < 512
    row["no_500"] = "500" not in statuses
    return row


def _answers(statuses: dict) -> str:
    """ "3,676 x 400, 12 connections closed by the server mid-send": the attack's answers, most frequent first."""
    words = {"-1": "connections closed by the server mid-send", "held_open": "held open"}
    ranked = sorted(statuses.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n:,} {words[k]}" if k in words else f"{n:,} x {k}" for k, n in ranked)


def table(path: Path) -> str:
    """The markdown table of docs/BENCHMARKS.md ("The server under attack"), from a results file."""
    rows = [
        "| attack | attack answers | main port /healthz p99 / max (ms) | failed probes | `--health-port` p99 / max (ms)"
        " | server RSS peak |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in json.loads(path.read_text())["results"].items():
        main_port = f"{r['healthz_p99_ms']:.1f} / {r['healthz_max_ms']:.1f}"
        health = f"{r['health_port_p99_ms']:.1f} / {r['health_port_max_ms']:.1f}"
        failed = f"{r['healthz_failures']} of {r['healthz_requests']}"
        cells = [name, _answers(r["attack_statuses"]), main_port, failed]
        cells += [f"{health} ({r['health_port_failures']} failed)", f"{r['server_rss_peak_mb']:.0f} MB"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--only", default=None, help="run the attacks whose name holds this text (no results file)")
    ap.add_argument("--table", action="store_true", help="print the docs' table from the results file and stop")
    a = ap.parse_args()
    if a.table:
        print(table(RESULTS / "serve_attacks.json"))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or ensure_model(Path(tmp)) / "model.onnx"
        results = {}
        names = [n for n in ["idle", *ATTACKS] if a.only is None or a.only in n]
        for name in names:  # a fresh server for each, so the memory peaks do not add up
            health_port = free_port()
            proc, url = start(model, ["--health-port", str(health_port)])
            try:
                results[name] = asyncio.run(one(name, url, proc.pid, a.seconds, health_port))
                print(name, results[name], flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    if a.only is not None:
        return
    save(
        "serve_attacks.json",
        {
            "machine": machine(),
            "command": "python benchmarks/serve_attacks.py " + " ".join(sys.argv[1:]),
            "seconds_per_attack": a.seconds,
            "results": results,
            "target": "/healthz p99 <= 100 ms with no failed probe, peak RSS < 512 MB and no 500, during every attack",
            "all_within_target": {
                name: r["healthz_within_100ms"] and r["peak_rss_under_512mb"] and r["no_500"]
                for name, r in results.items()
            },
            "probe": "GET /healthz every 20 ms, a fresh connection per probe (as a kubelet or load balancer), on the "
            "main port (healthz_*) and on --health-port (health_port_*) at once",
            "note": "attackers, probe and server share this machine's 2 cores; the slow heads attack runs "
            f"{SLOWLORIS_S:g} s, past the server's {HEAD_TIMEOUT_S:g} s --head-timeout-s",
        },
    )


if __name__ == "__main__":
    main()
