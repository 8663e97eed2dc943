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


class _Branchy(nn.Module):
    """Data-dependent control flow: TorchScript scripts it; torch.export and the ONNX exporter refuse it."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        y = self.conv(x).mean(dim=(2, 3))
        if bool(y.sum() > 0):
            y = y * 2
        return self.head(y)


def branchy(num_classes: int, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    return _Branchy(num_classes, in_channels)
