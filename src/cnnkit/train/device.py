"""Resolve `--device auto|cpu|cuda` for the torch side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cnnkit import atomic
from cnnkit.data.datasets import default_data_dir
from cnnkit.errors import DeviceError, option_error
from cnnkit.spec import DEVICES, TRAIN_PRECISIONS


def resolve_torch_device(name: str):
    import torch

    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        reason = (
            f"CUDA is not available to torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'}); "
            "use cpu, or run `cnnkit doctor`"
        )
        raise option_error(DeviceError, "device", "cuda", reason)
    return torch.device(name)


def choose_precision(
    requested: str, device, measure: Callable[[str], float] | None = None, steps: str = "eager"
) -> tuple[str, str]:
    """The training precision for `--precision auto|fp32|bf16` on `device`, and why (printed and checkpointed).

    auto picks bf16 autocast only where the hardware has bf16 matrix units and it trains faster:
    - CPUs with AMX (Sapphire Rapids and later): known (measured 1.60x fp32's images/s, train_speed.json);
    - CUDA compute capability 8.0+: measured once per GPU model and torch version with `measure(precision)` ->
      images/s (cached in the data cache folder, per kind of `steps`: "eager" or "cuda-graph"), because this
      small model's step is host-bound on a fast GPU and
      bf16's casts made it slower on an H200 (1.31 s vs 1.05 s per 60,000-image epoch with the code of commit
      e36c43f). bf16 must win by 10%.
    CPUs with only AVX512-BF16 or no bf16 units train in fp32: nothing here shows bf16 to be faster there.
    """
    import torch

    if requested not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAIN_PRECISIONS}, got {requested!r}")
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        native = (major, minor) >= (8, 0)
        hw = f"CUDA compute capability {major}.{minor}"
    else:
        caps = torch.cpu.get_capabilities()
        native = bool(caps.get("amx_bf16"))
        hw = (
            "CPU with AMX"
            if native
            else ("CPU with AVX512-BF16 but no AMX" if caps.get("avx512_bf16") else "CPU without bf16 units")
        )
    if requested == "fp32":
        return "fp32", "requested"
    if requested == "bf16":
        if native or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return "bf16", "requested"
        return "fp32", f"bf16 requested, but the {hw} has no bf16 support; fp32"
    if not native:
        return "fp32", f"auto: {hw}; fp32"
    if device.type != "cuda":
        return "bf16", f"auto: {hw} runs bf16 natively (measured 1.60x fp32's step rate on a Xeon with AMX)"
    if measure is None:
        return "bf16", f"auto: {hw} runs bf16 natively (not measured)"
    key = f"{torch.cuda.get_device_name(device)} | torch {torch.__version__} | {steps} steps"
    rates = _cached_rates().get(key)
    if not rates:
        rates = {p: measure(p) for p in ("fp32", "bf16")}
        _cache_rates(key, rates)
    bf16_wins = rates["bf16"] > 1.1 * rates["fp32"]
    return (
        "bf16" if bf16_wins else "fp32",
        f"auto: {hw}; measured on {key}: bf16 {rates['bf16']:,.0f} vs fp32 {rates['fp32']:,.0f} images/s",
    )


def _rates_file() -> Path:
    return default_data_dir() / "precision.json"


def _cached_rates() -> dict:
    try:
        data = json.loads(_rates_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _cache_rates(key: str, rates: dict) -> None:
    try:
        atomic.write_text(_rates_file(), json.dumps({**_cached_rates(), key: rates}, indent=2) + "\n")
    except OSError:
        pass  # a read-only cache only means measuring again next time
