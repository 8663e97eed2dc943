"""What this CPU is, as far as engine choices care: its model name and the instruction-set flags that decide which
kernels run fastest and what INT8 arithmetic does (AVX2, AVX-512, VNNI, BF16, AMX). Two CPUs of one model name can
differ (a hypervisor may hide AVX-512), so both are recorded and compared. Reads /proc/cpuinfo; nothing else."""

from __future__ import annotations

import platform
from pathlib import Path

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


def _cpuinfo_line(prefix: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_line("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features among RELEVANT_FLAGS that /proc/cpuinfo lists, in that order."""
    present = set((_cpuinfo_line("flags") or "").split())
    return [f for f in RELEVANT_FLAGS if f in present]
