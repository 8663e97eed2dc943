"""Helpers the tests share (data they write, a served model, V2 framing, PNG bytes, a Ctrl-C on cue): plain
functions, imported as `from helpers import ...` (pytest's `pythonpath` has tests/); fixtures stay in conftest."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cnnkit.data.idx import write_idx
from cnnkit.train.progress import Progress


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


def line_with(stream, marker: bytes) -> bytes:
    """The first line of a subprocess's `stream` holding `marker` (synchronising on what it says, not on time);
    fails when the stream ends first."""
    for line in iter(stream.readline, b""):
        if marker in line:
            return line
    raise AssertionError(f"the process ended without printing {marker!r}")


def free_port() -> int:
    """A port free right now, for servers that cannot pick their own (Triton's three): bind, read, release. Another
    process may take it before the server binds it; `start_server` avoids that race by asking for port 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LISTENING = re.compile(rb"Uvicorn running on http://([0-9.]+):([0-9]+)")
GRPC_LISTENING = re.compile(rb"gRPC on ([0-9.]+):([0-9]+)")


def _address(proc: subprocess.Popen, pattern: re.Pattern, seen: list[bytes]) -> str:
    """host:port from the first line of the server's output that matches `pattern`."""
    for line in iter(proc.stdout.readline, b""):
        seen.append(line)
        found = pattern.search(line)
        if found:
            return f"{found[1].decode()}:{found[2].decode()}"
    proc.wait(timeout=30)
    raise RuntimeError(b"".join(seen).decode(errors="replace"))


def start_server(model: str, *args: str, grpc: bool = False) -> tuple:
    """`cnnkit serve MODEL` in a subprocess on a port the kernel picks (`--port 0`, read back from the server's
    start-up line, so no other process can take it first); returns (process, url) once /readyz answers 200, and
    with `grpc` the gRPC address too (`--grpc-port 0`)."""
    import httpx

    extra = ["--grpc-port", "0"] if grpc else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "serve", model, "--port", "0", "--device", "cpu", *extra, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen: list[bytes] = []
    url = "http://" + _address(proc, LISTENING, seen)
    grpc_address = _address(proc, GRPC_LISTENING, seen) if grpc else None
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return (proc, url, grpc_address) if grpc else (proc, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
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


COLOURS = {"blue": (30, 40, 210), "green": (30, 200, 40), "red": (210, 30, 40)}


def photos(root: Path, n: int = 24) -> Path:
    """An RGB image folder of mixed sizes, PNG and JPEG, whose colour says the class (and one grayscale file)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            w, h = int(rng.integers(24, 64)), int(rng.integers(24, 64))
            a = np.asarray(colour)[None, None] * rng.uniform(0.6, 1.0, (h, w, 1)) + rng.normal(0, 25, (h, w, 3))
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    Image.fromarray(np.full((40, 30), 90, np.uint8)).save(root / "blue" / "gray.png")  # one grayscale file among them
    return root


def cli(*args: str, cwd: Path):
    """The CLI itself, in this process (no second torch import), run from `cwd`: returncode, stdout, stderr."""
    import contextlib
    from types import SimpleNamespace

    from click.testing import CliRunner

    from cnnkit.cli import main

    with contextlib.chdir(cwd):
        r = CliRunner().invoke(main, list(args))
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr + repr(r.exception or ""))


def sigint_default() -> None:
    """`preexec_fn` for a process a test Ctrl-C's: SIGINT as a terminal delivers it. A shell's background job (CI run
    as `make ... &`) starts with SIGINT ignored, and Python then installs no handler: the Ctrl-C would never arrive."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
