"""Downloads of the known datasets through torchvision (the `train` extra): `datasets.load_dataset`'s downloader."""

from __future__ import annotations

import contextlib
import io
import os
import socket
from pathlib import Path

from cnnkit.data.datasets import KNOWN, Downloader
from cnnkit.errors import DataError

TIMEOUT_S = 30
OFFLINE_ENV = "CNNKIT_OFFLINE"  # set (to anything but 0 or empty): cnnkit never goes online for data


def downloader() -> Downloader | None:
    """What `load_dataset` fetches a known dataset with: torchvision's downloads, or None where $CNNKIT_OFFLINE
    says not to go online (the tests set it; so can a user on a machine that must not reach the internet)."""
    return None if os.environ.get(OFFLINE_ENV, "0") not in ("", "0") else download


def download(name: str, root: Path) -> Path:
    """Download a torchvision dataset's raw IDX files into `root`; return their folder."""
    tv_name, _ = KNOWN[name]
    import torchvision.datasets as tvd  # heavy; only when downloading

    cls = getattr(tvd, tv_name)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)
    sink = io.StringIO()
    try:
        # torchvision prints every mirror it tries; keep that out of cnnkit's output.
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError variously
        # torchvision's message lists every mirror it tried; the last line holds the actual cause
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise DataError(f"could not download {tv_name} into {root} ({reason})") from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return root / tv_name / "raw"
