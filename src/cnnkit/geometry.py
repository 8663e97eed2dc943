"""The input geometry a model takes, recorded in its checkpoint and export and applied by the one decode rule
(`runtime.images.decode`) wherever an image becomes pixels: training's cache, predict, evaluate, serve.

At the bottom of the house (imports only `cnnkit.errors`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cnnkit.errors import DataError

CHANNELS = (1, 3)  # grayscale or RGB: what a model of cnnkit's may take
MAX_SIDE = 1024
RESIZE = ("shorter-crop", "stretch")  # resize the shorter side then centre-crop; or resize to the size outright
INVERT = ("auto", "never")  # auto: a dark-on-light image is inverted (MNIST's light-on-dark convention)
DEFAULT_SIDE = 32  # the side when the data's images are not all of one square size a model can take
MAX_DEFAULT_SIDE = 64  # a uniform size above this is resized to DEFAULT_SIDE unless --image-size says otherwise
PIXEL_FORMATS = {1: "Gray8", 3: "Rgb8"}  # ONNX's standard `Image.BitmapPixelFormat` metadata values


@dataclass(frozen=True, kw_only=True)
class Geometry:
    """Channels and size of the pixels a model takes, how an image of another size is fitted to them, and whether a
    dark-on-light one-channel image is inverted first."""

    channels: int = 1
    height: int = 28
    width: int = 28
    resize: str = "stretch"  # what exports written before the rule was recorded did
    invert: str = "auto"

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise DataError(problem)

    def problem(self) -> str | None:
        """What is wrong with these values (one rule for options, checkpoints and model metadata), or None."""
        if self.channels not in CHANNELS:
            return f"{self.channels} channels: a model takes 1 (grayscale) or 3 (RGB)"
        for side in (self.height, self.width):
            if not isinstance(side, int) or isinstance(side, bool) or not 1 <= side <= MAX_SIDE:
                return f"image size {self.height}x{self.width} is not within 1..{MAX_SIDE} a side"
        if self.resize not in RESIZE:
            return f"resize rule {self.resize!r} is not one of {', '.join(RESIZE)}"
        if self.invert not in INVERT or (self.channels == 3 and self.invert != "never"):
            return f"invert rule {self.invert!r} for {self.channels} channels (auto applies to one channel only)"
        return None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def pixel_format(self) -> str:
        return PIXEL_FORMATS[self.channels]

    def describe(self) -> str:
        kind = "grayscale" if self.channels == 1 else "RGB"
        return f"{self.height}x{self.width} {kind} ({self.resize}{', auto-invert' if self.invert == 'auto' else ''})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Geometry:
        """Rebuild from a checkpoint's or a model's record, DataError naming what is wrong."""
        if not isinstance(d, dict) or set(d) - {"channels", "height", "width", "resize", "invert"}:
            raise DataError(f"{where}: input geometry {str(d)[:80]} is not one cnnkit writes")
        try:
            return cls(**d)
        except (TypeError, DataError) as exc:
            raise DataError(f"{where}: {exc}") from None


def parse_size(text: str) -> tuple[int, int]:
    """`--image-size 32` or `--image-size 32x48` (height x width)."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise DataError(f"--image-size {text!r}: expected a side (32) or height x width (32x48)")
    h, w = int(parts[0]), int(parts[-1])
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise DataError(f"--image-size {text!r}: each side must be within 1..{MAX_SIDE}")
    return h, w


def default_size(sizes: set[tuple[int, int]]) -> tuple[tuple[int, int], str]:
    """The input size for images of these (width, height) sizes, and why: the data's own when they are all one
    square size of at most MAX_DEFAULT_SIDE divisible by 4, else DEFAULT_SIDE."""
    if len(sizes) == 1:
        (w, h) = next(iter(sizes))
        if w == h and w <= MAX_DEFAULT_SIDE and w % 4 == 0:
            return (h, w), f"every image is {w}x{h}"
        return (DEFAULT_SIDE, DEFAULT_SIDE), f"every image is {w}x{h}; resized to {DEFAULT_SIDE}x{DEFAULT_SIDE}"
    return (DEFAULT_SIDE, DEFAULT_SIDE), f"{len(sizes)} different sizes; each resized to {DEFAULT_SIDE}x{DEFAULT_SIDE}"
