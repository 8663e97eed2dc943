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
