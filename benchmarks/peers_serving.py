"""Serving, side by side: `cnnkit serve`, `cnnkit serve --engine triton` (a real Triton through PyTriton) and a KServe
ModelServer wrapping the same ONNX file, at 1/4/16/64 concurrent clients.

    bash benchmarks/peers_serving.sh    (makes the peer venvs and the optimized run, then runs this)
    python benchmarks/peers_serving.py RUN [--clients 1,4,16,64] [--seconds 3] [--rounds 3]

Two load generators. (1) The same asyncio client for all three servers (keep-alive connections, one 28x28 digit
per request as a binary UINT8 V2 tensor, the framing tritonclient uses), in alternating rounds, every server up
at once but the others stopped (SIGSTOP) while one is measured; medians over rounds. (2) NVIDIA's perf_analyzer,
unchanged, against `cnnkit serve` and the Triton engine
(KServe cannot be measured by it: it answers 404 to the model-configuration request perf_analyzer starts with).
Client and servers share this machine's cores. Writes benchmarks/results/peers_serving_cpu_<kind>.json, one per
kind of CPU (its instruction sets, as peers_inference names them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save
from peers_inference import cpu_kind
from perf_analyzer import measure as perf_analyzer
from serve_load import free_port, load
from serve_protocols import NAME, v2_request

ROOT = Path(__file__).resolve().parents[1]


def servers(model: Path, triton_python: str) -> dict[str, tuple[list[str], str]]:
    """name -> (command without the port, readiness path); the port is appended as the last two arguments."""
    own = [sys.executable, "-m", "cnnkit", "serve", str(model), "--device", "cpu", "--model-name", NAME]
    triton = [triton_python, "-m", "cnnkit", "serve", str(model), "--device", "cpu", "--model-name", NAME]
    triton += ["--engine", "triton", "--open-statistics", "--grpc-port", str(free_port())]
    triton += ["--metrics-port", str(free_port())]
    kserve = [str(ROOT / "benchmarks/.venv-kserve/bin/python"), str(ROOT / "benchmarks/peer_servers/kserve_onnx.py")]
    kserve += [str(model), "--name", NAME]
    return {
        "cnnkit serve": (own + ["--port"], "/readyz"),
        "cnnkit serve --engine triton": (triton + ["--port"], "/v2/health/ready"),
        "kserve ModelServer (onnxruntime)": (kserve + ["--http-port"], f"/v2/models/{NAME}/ready"),
    }


def spawn(cmd: list[str], ready: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([*cmd, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[:4]} exited with {proc.returncode}")
        try:
            if httpx.get(url + ready, timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{cmd[:4]} did not become ready")


@contextlib.contextmanager
def alone(procs: dict[str, list[int]], name: str) -> Iterator[None]:
    """Only `name`'s processes run meanwhile: the others are stopped (SIGSTOP), so an idle server's spinning
    threads take no CPU from the one measured, then continued (SIGCONT)."""
    others = [pid for n, pids in procs.items() if n != name for pid in pids]
    _signal(others, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal(others, signal.SIGCONT)


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a helper process that has since ended
            os.kill(pid, sig)


def tree(pid: int) -> list[int]:
    """A process and all its descendants (Triton's server and Python backend stub are children)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(map(int, out[::2]), map(int, out[1::2])):
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def sweep(
    urls: dict[str, str], procs: dict[str, list[int]], requests: list[bytes], clients: list[int], seconds: float,
    rounds: int,
) -> dict:  # fmt: skip
    for name, url in urls.items():
        with alone(procs, name):
            asyncio.run(load(url, requests[:20], 4, 1.0))  # warm-up, not reported
    raw: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in clients} for n in urls}
    for r in range(rounds):
        for c in clients:
            order = list(urls) if (r + c) % 2 == 0 else list(reversed(urls))
            for name in order:
                with alone(procs, name):
                    raw[name][c].append(asyncio.run(load(urls[name], requests, c, seconds)))
                row = raw[name][c][-1]
                print(r, c, name, round(row["requests_per_s"]), round(row["p99_ms"] or 0, 2), row["errors"], flush=True)
    return {
        name: [
            {
                "clients": c,
                "inferences_per_s": round(statistics.median(x["requests_per_s"] for x in runs), 1),
                "p50_ms": _median_ms(runs, "p50_ms"),
                "p99_ms": _median_ms(runs, "p99_ms"),
                "errors": sum(x["errors"] for x in runs),
                "rounds": [round(x["requests_per_s"], 1) for x in runs],
            }
            for c, runs in by_c.items()
        ]
        for name, by_c in raw.items()
    }


def _median_ms(runs: list[dict], key: str) -> float | None:
    values = [x[key] for x in runs if x[key] is not None]
    return round(statistics.median(values), 3) if values else None


def ratios(results: dict, clients: list[int]) -> dict:
    """cnnkit serve over the best peer (KServe here) and over the Triton engine, at each client count."""
    own = {r["clients"]: r["inferences_per_s"] for r in results["cnnkit serve"]}
    out = {}
    for c in clients:
        peer = max(r["inferences_per_s"] for n, rows in results.items() if n.startswith("kserve") for r in rows
                   if r["clients"] == c)  # fmt: skip
        triton = next(r["inferences_per_s"] for r in results["cnnkit serve --engine triton"] if r["clients"] == c)
        out[str(c)] = {"vs_best_peer": round(own[c] / peer, 3), "vs_triton_engine": round(own[c] / triton, 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run folder after `cnnkit optimize RUN --select`")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's measurement interval")
    ap.add_argument("--triton-python", default=str(ROOT / ".venv-triton/bin/python"))
    a = ap.parse_args()
    clients = [int(c) for c in a.clients.split(",")]
    from cnnkit.data.datasets import load_sample

    requests = [v2_request(img) for img in load_sample().test_images[:200, 0]]
    procs, urls = {}, {}
    try:
        for name, (cmd, ready) in servers(a.run / "model.onnx", a.triton_python).items():
            procs[name], urls[name] = spawn(cmd, ready)
        pids = {n: tree(p.pid) for n, p in procs.items()}
        results = sweep(urls, pids, requests, clients, a.seconds, a.rounds)
        pa = {}
        with tempfile.TemporaryDirectory() as tmp:
            for n in list(urls)[:2]:
                with alone(pids, n):
                    pa[n] = perf_analyzer(urls[n], clients, a.interval_ms, Path(tmp), NAME)
    finally:
        for p in procs.values():
            _signal(tree(p.pid), signal.SIGCONT)  # a stopped process would not see SIGTERM
            p.terminate()
            p.wait(timeout=60)
    save(
        f"peers_serving_cpu_{cpu_kind(machine()['cpu_flags'])}.json",
        {
            "machine": machine(),
            "command": "bash benchmarks/peers_serving.sh (python benchmarks/peers_serving.py "
            + " ".join(sys.argv[1:])
            + ")",
            "model": "the run's model.onnx after `cnnkit optimize --select` (cnnkit serve: engine auto, its record)",
            "asyncio_client": results,
            "ratios_asyncio_client": ratios(results, clients),
            "perf_analyzer": pa,
            "method": f"{a.rounds} alternating rounds of {a.seconds} s per server and client count, every server "
            "up at once, the others stopped (SIGSTOP) while one is measured; medians over rounds. perf_analyzer: "
            "-i http, binary UINT8, one image per request, "
            f"--measurement-interval {a.interval_ms}. KServe: latency logging off, otherwise its defaults "
            "(uvicorn access log on); no batching of its own.",
            "note": "client and servers share this machine's cores",
        },
    )


if __name__ == "__main__":
    main()
