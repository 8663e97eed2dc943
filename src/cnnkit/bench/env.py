"""The machine a benchmark ran on, recorded with every result (CPU model, GPU, versions)."""

from __future__ import annotations

import os
import platform
import sys
import time
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
