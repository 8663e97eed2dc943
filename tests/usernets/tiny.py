"""A user's own small network with BatchNorm: what `--arch usernets.tiny:build` trains, exports and serves."""

from __future__ import annotations

from torch import nn


def build(num_classes: int, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(8 * 16, num_classes),
    )


def broken(num_classes: int, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    return nn.Linear(3, num_classes)  # takes no image: the check names the failure
