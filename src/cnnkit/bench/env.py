"""The machine a benchmark ran on, recorded with every result (CPU model, GPU, versions)."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from cnnkit import __version__
from cnnkit.doctor import gpu_info, installed_version
from cnnkit.runtime.plan import cpu_model

RELEVANT_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def cpu_flags() -> list[str]:
    """The CPU features that decide which kernels run fastest (AVX2, AVX-512, VNNI, AMX), as /proc/cpuinfo has them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in RELEVANT_FLAGS if f in present]
    except OSError:
        pass
    return []


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
