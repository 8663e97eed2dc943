"""The user's own network, `--arch package.module:factory`: imported from the Python path (only when trusted, see
`nets.trust`), called as `factory(num_classes=N, in_channels=C, image_size=(H, W))`, and checked to be an
`nn.Module` whose output for one input is [1, N]."""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit.errors import CheckpointError, first_line
from cnnkit.spec import ModelConfig


def build(config: ModelConfig) -> Any:
    import torch
    from torch import nn

    module_name, _, attr = config.arch.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise CheckpointError(f"--arch {config.arch}: cannot import {module_name} ({first_line(exc)})") from None
    except AttributeError:
        raise CheckpointError(f"--arch {config.arch}: {module_name} has no {attr}") from None
    size = (config.image_size, config.image_size)
    try:
        model = factory(num_classes=config.num_classes, in_channels=config.in_channels, image_size=size)
    except Exception as exc:  # the user's code may raise anything: one line naming it
        raise CheckpointError(
            f"--arch {config.arch}: the factory failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"--arch {config.arch}: the factory returned a {type(model).__name__}, not an nn.Module")
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, config.in_channels, *size))
    except Exception as exc:
        raise CheckpointError(f"--arch {config.arch}: the module fails on a 1x{config.in_channels}x{size[0]}x"
                              f"{size[1]} input: {type(exc).__name__}: {first_line(exc)}") from None  # fmt: skip
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, config.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"--arch {config.arch}: the module returns {got}, not logits [1, {config.num_classes}]")
    return model.train()
