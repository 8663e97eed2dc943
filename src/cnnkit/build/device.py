"""Resolve `--device auto|cpu|cuda` for the torch side."""

from __future__ import annotations

from cnnkit.errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_torch_device(name: str):
    import torch

    if name not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {name!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"--device cuda requested but CUDA is not available to torch {torch.__version__} "
            f"(built for CUDA {torch.version.cuda or 'none'}); use --device cpu, or run `cnnkit doctor`"
        )
    return torch.device(name)


TRAIN_PRECISIONS = ("auto", "fp32", "bf16")


def choose_precision(requested: str, device) -> tuple[str, str]:
    """The training precision for `--precision auto|fp32|bf16` on `device`, and why (printed and checkpointed).

    auto picks bf16 autocast only where the hardware has bf16 matrix units, which is where it is known to train
    faster at the same accuracy: CUDA compute capability 8.0+ (Ampere, Hopper; measured on an H200), and CPUs with
    AMX (Sapphire Rapids and later). CPUs with only AVX512-BF16 or no bf16 at all train in fp32: oneDNN emulates or
    converts there, and nothing here shows it to be faster.
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
    if native:
        return "bf16", f"auto: {hw} runs bf16 natively"
    return "fp32", f"auto: {hw}; fp32"
