"""Shared fixtures: one small trained checkpoint per session, hermetic data dirs, a CUDA marker."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnkit.idx import write_idx
from cnnkit.train.progress import Progress


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing entirely
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none visible to torch")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA_DIR", str(tmp_path_factory.mktemp("cache")))


def write_idx_dataset(directory: Path, n_train=64, n_test=32, compress=False, seed=0, size=28) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in parts.items():
        write_idx(directory / name, arr, compress)
    return directory


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A checkpoint trained for one epoch on the bundled sample: real digits, clearly above chance (about 93%).

    One real end-to-end accuracy check rests on it (test_runtime); everything else only needs a real model.
    """
    from cnnkit.datasets import load_sample
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.run import train

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=1, batch_size=128, shift=0, rotate=0, device="cpu")  # ONE_EPOCH in test_train_options
    return train(load_sample(), cfg, out, progress=False)


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """ONNX and TorchScript exports of the session checkpoint."""
    from cnnkit.export.exporter import ExportOptions, export

    out = tmp_path_factory.mktemp("export")
    return export(trained.checkpoint, out, ExportOptions(formats=("onnx", "torchscript"), verify=False))


def line_with(stream, marker: bytes) -> bytes:
    """The first line of a subprocess's `stream` holding `marker` (synchronising on what it says, not on time);
    fails when the stream ends first."""
    for line in iter(stream.readline, b""):
        if marker in line:
            return line
    raise AssertionError(f"the process ended without printing {marker!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, *args: str) -> tuple[subprocess.Popen, str]:
    """`cnnkit serve MODEL` in a subprocess on a free port; returns it once /readyz answers 200."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "serve", model, "--port", str(port), "--device", "cpu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode())
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def v2_binary_header(n: int = 1) -> bytes:
    """The JSON header of a V2 request carrying `n` 28x28 uint8 images as binary data (tritonclient's framing)."""
    import json

    tensor = {
        "name": "images",
        "datatype": "UINT8",
        "shape": [n, 1, 28, 28],
        "parameters": {"binary_data_size": 784 * n},
    }
    return json.dumps({"inputs": [tensor]}).encode()


def png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def server(exported):
    """`cnnkit serve` on the session's ONNX export, in its own process, with small limits to test against."""
    proc, url = start_server(
        exported.artefacts["onnx"],
        "--max-batch",
        "16",
        "--max-delay-ms",
        "5",
        "--max-images",
        "8",
        "--max-body-mb",
        "1",
    )
    yield url
    proc.terminate()
    proc.wait(timeout=30)


class StopAfter(Progress):
    """A progress reporter that presses Ctrl-C once `epochs` epochs are saved (their line is printed after)."""

    def __init__(self, epochs: int):
        super().__init__(enabled=False)
        self.left = epochs

    def line(self, text: str) -> None:
        if text.startswith("epoch "):
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt
