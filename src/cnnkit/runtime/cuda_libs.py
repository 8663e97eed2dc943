"""ONNX Runtime's CUDA provider, made to load and to explain itself. Imports onnxruntime only (never torch).

- `preload_cuda_libraries` finds the CUDA and cuDNN libraries of the `nvidia-*` wheels wherever they are on the
  path (ONNX Runtime's own `preload_dlls` looks only beside the onnxruntime package) and keeps stdout clean.
- `capture_stderr_fd` and `ort_error` read ONNX Runtime's C++ log (stderr, ANSI-coloured) so the real error
  line can be reported, and its noise ("No registered plugin EP device found ...") kept out of users' output.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "<date> <time> [E:onnxruntime:Default, file.cc:123 fn] <message>"
_PREFIX = re.compile(r"^.*?\[([EWIVF]):onnxruntime:[^\]]*\]\s*")
# Logged at warning level by ONNX Runtime >= 1.26 before it falls back to the built-in CUDA provider.
NOISE = ("No registered plugin EP device found",)
# What a failed CUDA provider logs besides its [E:] line (summarised by `ort_error` instead).
_PROVIDER_FAILURE = ("Failed to create CUDAExecutionProvider",)


@dataclass(frozen=True, kw_only=True)
class Preloaded:
    """Where the CUDA and cuDNN libraries were loaded from (None: the system's default search path) and what
    ONNX Runtime said about it."""

    cuda_dir: str | None = None
    cudnn_dir: str | None = None
    messages: tuple[str, ...] = ()


class Captured:
    """What a process wrote to its stderr file descriptor inside a `capture_stderr_fd` block (once it ended)."""

    def __init__(self, text: str = ""):
        self.text = text


_preloaded: Preloaded | None = None


def nvidia_lib_dirs() -> list[Path]:
    """`lib` folders of the installed `nvidia-*` wheels (the `nvidia` namespace package), on any path entry."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs: list[Path] = []
    for root in spec.submodule_search_locations:
        dirs += sorted(p for p in Path(root).glob("*/lib") if p.is_dir())
    return dirs


def _first_with(dirs: list[Path], pattern: str) -> Path | None:
    return next((d for d in dirs if any(d.glob(pattern))), None)


def preload_cuda_libraries() -> Preloaded:
    """Load cuBLAS, cuFFT, cuRAND, the CUDA runtime and cuDNN before ONNX Runtime's CUDA provider needs them.

    Once per process. Returns where the libraries were taken from and what ONNX Runtime said about it (it prints
    to stdout; captured here).
    """
    global _preloaded
    if _preloaded is not None:
        return _preloaded
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        _preloaded = Preloaded()
        return _preloaded
    dirs = nvidia_lib_dirs()
    cuda_dir, cudnn_dir = _first_with(dirs, "libcublas.so.*"), _first_with(dirs, "libcudnn.so.*")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # cuda first: cuDNN's libraries link against cuBLAS. directory="" means "nvidia site packages beside
        # onnxruntime, then the default search path", which is right when nothing was found elsewhere.
        for kw in (
            {"cuda": True, "cudnn": False, "directory": str(cuda_dir) if cuda_dir else ""},
            {"cuda": False, "cudnn": True, "directory": str(cudnn_dir) if cudnn_dir else ""},
        ):
            try:
                preload(msvc=False, **kw)
            except Exception as exc:  # best effort: the session creation reports what really happened
                print(f"{type(exc).__name__}: {exc}")
    _preloaded = Preloaded(
        cuda_dir=str(cuda_dir) if cuda_dir else None,
        cudnn_dir=str(cudnn_dir) if cudnn_dir else None,
        messages=tuple(clean(line) for line in out.getvalue().splitlines() if line.strip()),
    )
    return _preloaded


@contextlib.contextmanager
def capture_stderr_fd() -> Iterator[Captured]:
    """Capture process-level stderr (file descriptor 2, where ONNX Runtime's C++ logger writes).

    Yields a Captured whose `text` holds what was written, once the block has ended.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    box = Captured()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box.text = tmp.read().decode("utf-8", "replace")


def clean(line: str) -> str:
    """A log line without ANSI colour codes and without ONNX Runtime's timestamp/source prefix."""
    return _PREFIX.sub("", _ANSI.sub("", line)).strip()


def ort_error(log: str) -> str | None:
    """The message of the first error ([E:...]) line in an ONNX Runtime log, shortened to what a user needs."""
    for raw in _ANSI.sub("", log).splitlines():
        m = _PREFIX.match(raw)
        if m and m.group(1) in "EF":
            msg = clean(raw)
            # "/onnxruntime_src/...cc:2043 onnxruntime::Provider& ...() [ONNXRuntimeError] : 1 : FAIL : <message>"
            return msg.rsplit(" : FAIL : ", 1)[-1].strip() or msg
    return None


def passthrough(log: str, fell_back: bool) -> str:
    """The part of a captured ONNX Runtime log to show the user: the plugin-EP notice always dropped, and the
    provider-failure lines dropped when the caller reports the failure itself (`fell_back`)."""
    keep = []
    for raw in log.splitlines(keepends=True):
        text = _ANSI.sub("", raw)
        if any(n in text for n in NOISE):
            continue
        if fell_back and (any(n in text for n in _PROVIDER_FAILURE) or ort_error(text)):
            continue
        if text.strip():
            keep.append(raw)
    return "".join(keep)
