import asyncio
import base64
import io
import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from cnnkit.data.datasets import load_sample
from cnnkit.runtime import Classifier
from cnnkit.serve.batching import Batcher, BatchFailed
from helpers import png, start_server


@pytest.fixture(scope="module")
def clf(exported):
    return Classifier(exported.artefacts["onnx"], device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_sample().test_images[:64, 0]


def test_server_process_never_imports_torch(exported):
    code = (
        "import sys; from cnnkit.cli.common import make_classifier; from cnnkit.serve import create_app; "
        f"create_app(make_classifier({exported.artefacts['onnx']!r}, 'cpu')); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_predict_forms_match_runtime(server, clf, digits):
    expect = clf.predict(digits[:3])
    r = httpx.post(server + "/v1/predict?top_k=2", content=png(digits[0]), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    p = body["predictions"][0]
    assert p["label"] == expect[0].label and p["probability"] == pytest.approx(expect[0].probability, abs=1e-5)
    assert len(p["top_k"]) == 2 and len(p["probabilities"]) == 10 and body["model_version"] == clf.info.version

    files = [("a", ("a.png", png(digits[0]), "image/png")), ("b", ("b.png", png(digits[1]), "image/png"))]
    r = httpx.post(server + "/v1/predict", files=files)
    assert [q["label"] for q in r.json()["predictions"]] == [e.label for e in expect[:2]]

    doc = {
        "images": [
            base64.b64encode(png(digits[2])).decode(),
            digits[1].tolist(),
            {"pixels": (digits[0] / 255.0).tolist()},
        ],
        "top_k": 1,
    }
    r = httpx.post(server + "/v1/predict", json=doc)
    assert r.status_code == 200, r.text
    assert [q["label"] for q in r.json()["predictions"]] == [expect[2].label, expect[1].label, expect[0].label]


def test_concurrent_clients_get_their_own_results(server, clf, digits):
    expect = [p.label for p in clf.predict(digits)]

    async def one(client, i):
        n = 1 + i % 3  # mixed request sizes
        idx = [(i + j) % len(digits) for j in range(n)]
        r = await client.post(server + "/v1/predict", json={"images": [digits[k].tolist() for k in idx]})
        assert r.status_code == 200, r.text
        return [q["label"] for q in r.json()["predictions"]], [expect[k] for k in idx]

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(one(client, i) for i in range(48)))

    for got, want in asyncio.run(main()):
        assert got == want
    metrics = {f.name: f for f in text_string_to_metric_families(httpx.get(server + "/metrics").text)}
    batches = {s.labels["le"]: s.value for s in metrics["cnnkit_batch_size"].samples if s.name.endswith("_bucket")}
    count = next(s.value for s in metrics["cnnkit_batch_size"].samples if s.name.endswith("_count"))
    assert count - batches["1.0"] >= 1, "no request was batched with another"


ZEROS = b'{"images": [' + json.dumps([[0] * 28] * 28).encode() + b"]"


def bomb_png() -> bytes:
    """A few kilobytes that decode to 25 million pixels."""
    buf = io.BytesIO()
    Image.new("1", (5000, 5000), 0).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "kwargs,status,match",
    [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 400, "not a recognised image"),
        ({"json": {"images": [[[0] * 20] * 20]}}, 400, "expected 1x28x28"),
        ({"json": {"images": [[[0, 1], [2]]]}}, 400, "ragged"),
        ({"json": {"images": ["!!notbase64"]}}, 400, "base64"),
        ({"json": {"nothing": 1}}, 400, '"images"'),
        ({"content": b"{bad json", "headers": {"content-type": "application/json"}}, 400, "invalid JSON"),
        ({"json": {"images": [[[0] * 28] * 28] * 9}}, 413, "limit is 8"),
        ({"files": [("f", (f"{i}.png", b"x", "image/png")) for i in range(9)]}, 413, "more than 8 files"),
        ({"content": b"\x00" * (1024 * 1024 + 1), "headers": {"content-type": "image/png"}}, 413, "byte limit"),
        # the hostile and the careless (issue 15)
        (
            {"content": ZEROS + b', "top_k": 1e400}', "headers": {"content-type": "application/json"}},
            400,
            "top_k",
        ),
        (
            {"content": ZEROS + b', "top_k": Infinity}', "headers": {"content-type": "application/json"}},
            400,
            "top_k",
        ),
        ({"json": {"images": [[[0] * 28] * 28], "top_k": 0}}, 400, "top_k must be an integer 1..10"),
        ({"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, 400, "invalid JSON"),
        ({"json": {"images": [[[[0] * 28] * 28] * 2]}}, 400, "more than the 784 elements"),
        ({"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "multipart body"),
        ({"content": iter([b"\x00" * 65536] * 40), "headers": {"content-type": "image/png"}}, 413, "byte limit"),
        ({"content": bomb_png(), "headers": {"content-type": "image/png"}}, 400, "pixels; the limit is 4,194,304"),
    ],
)
def test_bad_input_is_4xx_and_server_stays_up(server, kwargs, status, match):
    r = httpx.post(server + "/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    assert match in r.json()["error"]
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}


def test_every_error_is_json_and_counted(server, digits):
    body = png(digits[0])
    for method, path, kwargs, status in (
        ("POST", "/v1/predict?invert=maybe", {"content": body}, 400),
        ("POST", "/v1/predict?top_k=%C2%B9", {"content": body}, 400),  # a Unicode digit
        ("GET", "/nowhere", {}, 404),
        ("GET", "/v1/predict", {}, 405),
    ):
        r = httpx.request(method, server + path, headers={"content-type": "image/png"}, **kwargs)
        assert r.status_code == status and r.headers["content-type"] == "application/json", (path, r.text)
        assert r.json()["error"]
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:  # a client that gives up halfway through its body
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n12")
    counted = set()
    deadline = time.time() + 10
    while "499" not in counted and time.time() < deadline:  # until the server has seen the client go
        fams = {f.name: f for f in text_string_to_metric_families(httpx.get(server + "/metrics").text)}
        counted = {s.labels["status"] for s in fams["cnnkit_requests"].samples if s.name == "cnnkit_requests_total"}
    assert {"400", "404", "405", "499"} <= counted and "500" not in counted


def test_model_and_metrics_endpoints(server, clf):
    info = httpx.get(server + "/v1/model").json()
    assert info["metadata"]["classes"] == list(clf.classes) and info["providers"] == ["CPUExecutionProvider"]
    assert [(e["from_batch"], e["engine"], e["precision_run"]) for e in info["engines"]] == [(1, "onnxruntime", "fp32")]
    fams = {f.name: f for f in text_string_to_metric_families(httpx.get(server + "/metrics").text)}
    assert {
        "cnnkit_requests",
        "cnnkit_request_latency_seconds",
        "cnnkit_batch_size",
        "cnnkit_queue_depth_images",
    } <= set(fams)
    statuses = {s.labels.get("status") for s in fams["cnnkit_requests"].samples}
    assert "200" in statuses


def test_batcher_failure_hits_only_its_batch():
    def infer(batch):
        if (batch == 255).any():
            raise RuntimeError("boom")
        return batch.reshape(len(batch), -1)[:, :2].astype(np.float32)

    async def main():
        b = Batcher(infer, max_batch=4, max_delay_ms=20)
        b.start()
        good = [np.full((1, 1, 28, 28), i, np.uint8) for i in range(6)]
        bad = np.full((1, 1, 28, 28), 255, np.uint8)
        # 0..3 fill the first batch; bad + 4,5 form the second and share its failure.
        results = await asyncio.gather(*(b.submit(x) for x in good[:4] + [bad] + good[4:]), return_exceptions=True)
        later = await b.submit(good[5])
        await b.stop()
        return results, later

    results, later = asyncio.run(main())
    assert [r[0, 0] for r in results[:4]] == [0, 1, 2, 3]
    assert all(isinstance(r, BatchFailed) for r in results[4:])
    assert later[0, 0] == 5


@pytest.mark.slow
def test_sigterm_under_keep_alive_load_loses_no_sent_request(exported, digits):
    """32 keep-alive clients post continuously; SIGTERM: the drain answers everything sent (closing connections
    after each answer), then the server exits 0. A client may find the server gone (connect refused: nothing was
    sent); none may lose a request it sent."""
    proc, url = start_server(exported.artefacts["onnx"], "--drain-s", "1")
    body = png(digits[0])
    ok, refused, lost, drained = [0], [0], [], [0]

    answers = [0] * 32  # per client

    async def client(stop_at: float, me: int) -> None:
        async with httpx.AsyncClient(timeout=20) as c:
            while time.time() < stop_at:
                try:
                    r = await c.post(url + "/v1/predict", content=body, headers={"content-type": "image/png"})
                except httpx.ConnectError:
                    refused[0] += 1
                    return
                except httpx.HTTPError as exc:
                    lost.append(type(exc).__name__)
                    continue
                if r.status_code != 200:
                    lost.append(r.status_code)
                ok[0] += 1
                answers[me] += 1
                drained[0] += r.headers.get("connection") == "close"

    async def main() -> None:
        async def stop() -> None:
            deadline = time.time() + 3
            while min(answers) < 20 and time.time() < deadline:  # steady load: 20 answers on every connection
                await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGTERM)

        # each client posts until it finds the server gone (30 s is only a backstop): however slow a loaded machine
        # makes the drain, every client is still sending when the server stops
        await asyncio.gather(stop(), *(client(time.time() + 30, i) for i in range(32)))

    asyncio.run(main())
    assert proc.wait(timeout=30) == 0
    assert ok[0] > 32 and drained[0] > 0 and refused[0] > 0
    assert lost == [], f"{len(lost)} sent requests lost: {lost[:5]}"


@pytest.mark.slow
def test_sigterm_during_a_burst_of_new_connections_loses_no_sent_request(exported, digits):
    """64 clients each open a fresh connection per request (as a load balancer's do), send it whole and read the
    answer. SIGTERM mid-burst: every request that went out gets its answer; once the server stops accepting, a
    client is refused at connect (it has sent nothing). Connections the kernel queued before the listener closed
    are accepted and answered, not reset."""
    proc, url = start_server(exported.artefacts["onnx"], "--drain-s", "0.5")
    host, port = url.removeprefix("http://").split(":")
    body = png(digits[0])
    request = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answered, refused, lost = [0], [0], []

    backstop = time.time() + 60  # a server that never stops fails the test below, not hangs it

    async def client() -> None:
        while time.time() < backstop:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                refused[0] += 1
                return
            try:
                writer.write(request)
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                lost.append(type(exc).__name__)  # sent (or half sent) and never answered
                continue
            finally:
                writer.close()
            if not head.startswith(b"HTTP/1.1 200"):
                lost.append(head[:12])
            answered[0] += 1

    async def main() -> None:
        async def stop() -> None:
            while answered[0] < 200:
                await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGTERM)

        await asyncio.gather(stop(), *(client() for _ in range(64)))

    asyncio.run(main())
    assert proc.wait(timeout=30) == 0
    assert answered[0] > 200 and refused[0] == 64
    assert lost == [], f"{len(lost)} sent requests lost: {lost[:5]}"


def test_sigterm_finishes_in_flight_and_exits_zero(exported, digits):
    """A request half sent when SIGTERM arrives is read to its end, answered, and then the server exits 0."""
    proc, url = start_server(exported.artefacts["onnx"])
    body = png(digits[0])
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
        s.sendall(head.encode() + body[:10])
        proc.send_signal(signal.SIGTERM)
        s.sendall(body[10:])
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert proc.wait(timeout=30) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", timeout=1)


def test_health_and_readiness_on_their_own_port_follow_the_server(exported):
    """--health-port: /healthz and /readyz on a port of their own (a process of their own), 200 while serving, 503
    while the server is stopped and 200 again when it runs; during the drain after SIGTERM /readyz is 503 there as
    on the main port; gone with the server."""
    import re

    proc, url = start_server(exported.artefacts["onnx"], "--health-port", "0", "--drain-s", "2")
    try:
        health = None
        for line in iter(proc.stdout.readline, b""):  # the line comes after the main port's
            found = re.search(rb"health and readiness on (http://[0-9.]+:[0-9]+)", line)
            if found:
                health = found[1].decode()
                break
        assert health is not None and health != url
        assert httpx.get(health + "/healthz").json() == {"status": "ok"}
        assert httpx.get(health + "/readyz").status_code == 200
        assert httpx.get(health + "/v2/health/ready").json() == {"ready": True}
        assert httpx.get(health + "/v1/predict").status_code == 404  # health only
        # a server that stops turning (here: stopped outright) is not live there, and is again once it runs
        proc.send_signal(signal.SIGSTOP)
        try:
            deadline = time.time() + 10
            while (r := httpx.get(health + "/healthz", timeout=2)).status_code == 200:
                assert time.time() < deadline
                time.sleep(0.2)
            assert r.status_code == 503 and r.json()["status"] == "stalled"
            assert httpx.get(health + "/readyz", timeout=2).status_code == 503
        finally:
            proc.send_signal(signal.SIGCONT)
        deadline = time.time() + 10
        while httpx.get(health + "/healthz", timeout=2).status_code != 200:
            assert time.time() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 5
        while httpx.get(health + "/readyz").status_code == 200:  # the drain begins
            assert time.time() < deadline
            time.sleep(0.05)
        assert httpx.get(url + "/readyz").status_code == 503 and httpx.get(health + "/healthz").status_code == 200
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(health + "/healthz", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_health_port_goes_with_a_server_that_is_killed(exported):
    """SIGKILL leaves no health process answering for a server that is gone: it ends when its pipe does."""
    import re

    proc, url = start_server(exported.artefacts["onnx"], "--health-port", "0")
    health = None
    for line in iter(proc.stdout.readline, b""):
        if found := re.search(rb"health and readiness on (http://[0-9.]+:[0-9]+)", line):
            health = found[1].decode()
            break
    assert health is not None and httpx.get(health + "/healthz").status_code == 200
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.time() + 10
    while True:
        try:
            httpx.get(health + "/healthz", timeout=1)
        except httpx.HTTPError:
            break  # refused: nothing listens there any more
        assert time.time() < deadline, "the health process outlived its server"
        time.sleep(0.1)
