"""The machine a benchmark ran on, recorded with every result (CPU model and flags, GPU, versions), and what was
measured: the command, and where cnnkit runs from a git checkout, its commit and whether the tree had changes."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from cnnkit import __version__
from cnnkit.doctor import gpu_info, installed_version
from cnnkit.runtime.cpu import cpu_flags, cpu_model


def environment(device: str, threads: int) -> dict[str, Any]:
    """Versions and hardware; torch's details only where this process already uses torch."""
    import onnxruntime as ort

    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": installed_version("torch"),
        "torch_cuda": None,
        "onnxruntime": ort.__version__,
        "cnnkit": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **provenance(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    if device == "cuda":
        g = gpu_info()
        env.update(gpu=g.get("name"), gpu_driver=g.get("driver"))
        if torch is not None and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name()
    return env


RESULTS = "benchmarks/results/"  # where the benchmark scripts write


def provenance(tree: Path | None = None) -> dict[str, Any]:
    """The command that is running and the commit measured: `tree` (default: the checkout cnnkit is imported from)
    at HEAD, and whether tracked files differ from it (result files under benchmarks/results/ aside: a run's own
    outputs). Outside a git checkout (an installed wheel) the commit is
    None and cnnkit's version says what ran."""
    import subprocess

    here = tree or Path(__file__).resolve().parents[3]
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    command = " ".join(["cnnkit" if program in ("__main__.py", "cnnkit") else program, *sys.argv[1:]])

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD") if (here / ".git").exists() else None
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    # result files a benchmark run has just rewritten are its outputs, not a change to what was measured
    changed = None if changes is None else [ln for ln in changes.splitlines() if RESULTS not in ln]
    return {"command": command, "commit": commit, "uncommitted_changes": None if changed is None else bool(changed)}
