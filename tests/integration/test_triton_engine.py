"""`cnnkit serve --engine triton`: a real Triton Inference Server (PyTriton), driven by tritonclient.

PyTriton needs numpy<2 and a system (not pyenv) Python: `make triton-check` runs this file in such a venv
(.venv-triton) against a model exported by the main venv (CNNKIT_TEST_ONNX). Elsewhere the engine tests skip,
saying why, and the missing-extra message is tested instead.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import free_port

HAVE_PYTRITON = importlib.util.find_spec("pytriton") is not None
NUMPY_1 = int(np.__version__.split(".")[0]) < 2
if os.environ.get("CNNKIT_REQUIRE_TRITON") and not (HAVE_PYTRITON and NUMPY_1):  # `make triton-check`: no skip
    raise RuntimeError(f"CNNKIT_REQUIRE_TRITON: PyTriton {HAVE_PYTRITON}, numpy {np.__version__} (needs <2)")
engine_only = pytest.mark.skipif(
    not (HAVE_PYTRITON and NUMPY_1),
    reason="PyTriton (the 'triton' extra, numpy<2) is not installed in this interpreter; `make triton-check` runs it",
)


@pytest.fixture(scope="module")
def onnx_model(request):
    return os.environ.get("CNNKIT_TEST_ONNX") or request.getfixturevalue("exported").artefacts["onnx"]


def classify(url: str, x: np.ndarray, binary: bool, name: str, top: int = 0) -> np.ndarray:
    """The same client code for either engine: the logits, or with `top` Triton's classification answers."""
    import tritonclient.http as th

    client = th.InferenceServerClient(url)
    try:
        i = th.InferInput("images", list(x.shape), "UINT8")
        i.set_data_from_numpy(x, binary_data=binary)
        out = th.InferRequestedOutput("logits", binary_data=binary, class_count=top)
        return client.infer(name, [i], outputs=[out]).as_numpy("logits")
    finally:
        client.close()


@pytest.mark.skipif(HAVE_PYTRITON, reason="checks the message shown where PyTriton is missing")
def test_missing_pytriton_is_one_line(onnx_model):
    r = subprocess.run(
        [sys.executable, "-m", "cnnkit", "serve", onnx_model, "--engine", "triton"], capture_output=True, text=True
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: cnnkit serve --engine triton needs the 'triton' extra")


@engine_only
def test_triton_engine_serves_the_same_logits_as_cnnkit_serve(onnx_model):
    import tritonclient.http as th

    from helpers import start_server

    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "cnnkit", "serve", onnx_model, "--engine", "triton", "--device", "cpu"]
    cmd += ["--port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--model-name", "digits"]
    # the engine's temporary folders (gone after SIGTERM); a short path: Triton puts Unix sockets there
    workspace = Path(tempfile.mkdtemp(prefix="ct", dir="/tmp"))
    env = {**os.environ, "TMPDIR": str(workspace)}
    triton = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    own, own_url = start_server(onnx_model, "--model-name", "digits")
    try:
        from cnnkit.runtime import Classifier

        shape = Classifier(onnx_model, device="cpu").info.geometry.shape  # 1x28x28 digits, 3x32x32 photos, ...
        x = np.random.default_rng(0).integers(0, 256, (6, *shape), dtype=np.uint8)
        client = th.InferenceServerClient(f"127.0.0.1:{http}")
        deadline = time.time() + 90
        while True:  # the server-level readiness, as a load balancer probes it
            assert triton.poll() is None, triton.stdout.read().decode()[-3000:]
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            assert time.time() < deadline, "Triton did not become ready"
            time.sleep(0.05)
        # ready means the model answers: the first request after the first 200 is served, not a 404
        assert classify(f"127.0.0.1:{http}", x[:1], True, "digits").shape[0] == 1
        # and the repository index lists the model, ready
        index = client.get_model_repository_index()  # answers without a token on loopback
        assert [(m["name"], m.get("state")) for m in index] == [("digits", "READY")], index
        for binary in (True, False):
            a = classify(f"127.0.0.1:{http}", x, binary, "digits")
            b = classify(own_url.removeprefix("http://"), x, binary, "digits")
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        # the classification extension answers the same, labels included ("score:index:label")
        tops = [classify(u, x, True, "digits", top=3) for u in (f"127.0.0.1:{http}", own_url.removeprefix("http://"))]
        assert [[e.decode().split(":")[1:] for e in row] for row in tops[0]] == [
            [e.decode().split(":")[1:] for e in row] for row in tops[1]
        ]
        assert all(len(e.decode().split(":")) == 3 for e in tops[0].ravel())
        for url in (f"127.0.0.1:{http}", own_url.removeprefix("http://")):  # Triton's config: the labels file named
            c = th.InferenceServerClient(url)
            assert c.get_model_config("digits")["output"][0]["label_filename"] == "labels.txt"
            c.close()
        assert client.get_model_metadata("digits")["inputs"][0]["datatype"] == "UINT8"
        # on a loopback address no token is asked for: statistics (what perf_analyzer reads) answer without one
        stats = client.get_inference_statistics("digits")["model_stats"][0]
        assert stats["name"] == "digits" and stats["inference_count"] == 1 + 12 + 6, stats  # no warm-up counted
        try:
            import tritonclient.grpc as tg
        except ImportError:
            tg = None
        if tg is not None:  # Triton's gRPC endpoint answers the same
            g = tg.InferenceServerClient(f"127.0.0.1:{grpc}")
            i = tg.InferInput("images", list(x.shape), "UINT8")
            i.set_data_from_numpy(x)
            np.testing.assert_allclose(g.infer("digits", [i]).as_numpy("logits"), a, rtol=1e-5, atol=1e-5)
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
        assert 'nv_inference_request_success{model="digits"' in text
        client.close()
        # stopped as Docker, Kubernetes and systemd stop it: exit 0, nothing left behind
        triton.send_signal(signal.SIGTERM)
        assert triton.wait(timeout=60) == 0, triton.stdout.read().decode()[-2000:]
        left = [p.name for p in workspace.iterdir() if p.is_dir()]  # (Triton's binary leaves a 51-byte .ses file)
        assert left == [], left
        shutil.rmtree(workspace)
    finally:
        own.terminate()
        own.wait(timeout=30)
        if triton.poll() is None:
            triton.send_signal(signal.SIGINT)
            try:
                triton.wait(timeout=60)
            except subprocess.TimeoutExpired:
                triton.kill()
