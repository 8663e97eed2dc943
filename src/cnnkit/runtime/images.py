"""Image files and bytes -> uint8 grayscale arrays in the training data's convention. Torch-free.

MNIST digits are light strokes on a dark background. Scans and drawings are usually the opposite, so by
default an image whose border is mostly light is inverted (and the caller is told).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnkit.errors import InputError


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8 [size, size]
    inverted: bool
    original_size: tuple[int, int]  # (width, height) before resizing


def looks_dark_on_light(gray: np.ndarray) -> bool:
    """True when the border (where a centred digit isn't) is mostly light."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(border.mean()) > 127.5


def decode(data: bytes, size: int = 28, invert: bool | None = None, name: str = "image") -> Decoded:
    """Decode PNG/JPEG/PGM/... bytes to a uint8 size x size grayscale array.

    Args:
        invert: True/False to force; None to detect dark-on-light images and invert them.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            original = im.size
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # Composite transparency on white so a transparent background does not turn black.
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im.convert("RGBA"))
            gray = im.convert("L")
            if gray.size != (size, size):
                gray = gray.resize((size, size), Image.Resampling.LANCZOS)
            pixels = np.asarray(gray, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a recognised image (expected PNG, JPEG, PGM or another Pillow format)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{name}: cannot decode image ({exc})") from None
    do_invert = looks_dark_on_light(pixels) if invert is None else invert
    if do_invert:
        pixels = 255 - pixels
    return Decoded(pixels, do_invert, original)


def load(path: str | os.PathLike[str], size: int = 28, invert: bool | None = None) -> Decoded:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror})") from None
    return decode(data, size, invert, name=str(p))
