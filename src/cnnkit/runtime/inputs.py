"""What a model takes, and turning what callers pass into exactly that. numpy only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.errors import InputError


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """The model's input: uint8 pixels [N, channels, height, width] under `name`."""

    name: str
    channels: int
    height: int
    width: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return (self.channels, self.height, self.width)

    def describe(self) -> str:
        kind = "grayscale" if self.channels == 1 else f"{self.channels}-channel"
        return f"{self.height}x{self.width} {kind}"

    def is_ready(self, x: Any) -> bool:
        """`x` is already a non-empty, C-contiguous uint8 [N, C, H, W] numpy batch (no conversion needed)."""
        return (
            type(x) is np.ndarray
            and x.dtype == np.uint8
            and x.ndim == 4
            and x.shape[1:] == self.image_shape
            and x.shape[0] > 0
            and x.flags.c_contiguous
        )

    def batch(self, images: Any) -> np.ndarray:
        """Convert images to a uint8 [N, C, H, W] batch, or raise InputError saying what is wrong.

        Accepts a uint8 HxW image, NxHxW, NxCxHxW, a list of such, or floats in [0, 1].
        """
        x = images
        if isinstance(x, (list, tuple)):
            if not x:
                raise InputError("empty batch: got an empty list of images")
            if all(isinstance(i, np.ndarray) for i in x):
                return np.concatenate([self.batch(i) for i in x])
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                raise InputError(f"images are not an array of pixels ({type(exc).__name__})") from None
        if x.dtype == object:
            raise InputError("images have ragged or non-numeric content; expected equal-sized pixel arrays")
        c, h, w = self.image_shape
        if x.ndim == 2:
            x = x[None, None]
        elif x.ndim == 3:
            # NxHxW for a one-channel model; otherwise a single CxHxW image
            x = x[:, None] if c == 1 and x.shape[1:] == (h, w) else x[None]
        elif x.ndim != 4:
            raise InputError(f"images of rank {x.ndim} (shape {x.shape}); expected HxW, NxHxW or Nx{c}xHxW")
        if x.shape[0] == 0:
            raise InputError(f"empty batch: got shape {x.shape}")
        if x.shape[1:] != self.image_shape:
            raise InputError(
                f"images of shape {tuple(x.shape[1:])}; expected {c}x{h}x{w} "
                f"(this model takes {self.describe()} images)"
            )
        return np.ascontiguousarray(to_uint8(x))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 pixels from uint8, integers in 0..255 or floats in [0, 1]; InputError for anything else."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        raise InputError("images are boolean; expected uint8 pixels 0..255 or floats in [0, 1]")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise InputError("images contain NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"float images must be in [0, 1], got values in [{lo:g}, {hi:g}]; pass uint8 for 0..255 pixels"
            )
        return np.rint(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise InputError(f"integer pixels must be in 0..255, got values in [{lo}, {hi}]")
        return x.astype(np.uint8)
    raise InputError(f"images of dtype {x.dtype}; expected uint8 (0..255) or float (0..1)")
