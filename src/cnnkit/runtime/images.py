"""Image files and bytes -> uint8 pixels [C, H, W] in a model's geometry (`cnnkit.geometry`): the one decode
rule, used by training's cache, predict, evaluate and serve. Torch-free.

MNIST digits are light strokes on a dark background. Scans and drawings are usually the opposite, so for a
one-channel model whose geometry says `invert="auto"`, an image whose border is mostly light is inverted (and the
caller is told). An RGB model's images are never inverted unless the caller asks.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import InputError
from cnnkit.geometry import Geometry
from cnnkit.runtime import image_guard

MAX_FILE_BYTES = 64 * 1024 * 1024  # an image file read from disk
MAX_PIXELS = 4096 * 4096  # of one image before resizing: far below Pillow's decompression-bomb limit


@dataclass(frozen=True, kw_only=True)
class Decoded:
    pixels: np.ndarray  # uint8 [C, H, W]
    inverted: bool
    original_size: tuple[int, int]  # (width, height) before resizing
    warning: str | None = None  # e.g. the image decodes to a blank


def looks_dark_on_light(gray: np.ndarray) -> bool:
    """True when the border of an [H, W] image (where a centred digit isn't) is mostly light."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(border.mean()) > 127.5


def _rgb(im: Any) -> Any:
    """Any mode Pillow reads -> an 8-bit RGB image; transparency laid on white, deep gray scaled like `_gray`."""
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _gray(im).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def fit(im: Any, geometry: Geometry) -> Any:
    """A Pillow image resized to the geometry's size by its rule: `shorter-crop` scales the shorter side to fit and
    crops the centre (Pillow's ImageOps.fit), `stretch` resizes outright. Lanczos resampling either way."""
    from PIL import Image, ImageOps

    size = (geometry.width, geometry.height)
    if im.size == size:
        return im
    if geometry.resize == "shorter-crop":
        return ImageOps.fit(im, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return im.resize(size, Image.Resampling.LANCZOS)


def _to_unit_range(a: np.ndarray, mode: str) -> np.ndarray:
    """A 16/32-bit integer or float image scaled to 0..255 (not clipped): by its type's range where the values
    fit it (0..1 floats, 0..255, 0..65535), else by its own maximum."""
    a = a.astype(np.float64)
    top = float(np.nanmax(a)) if a.size else 0.0
    if not np.isfinite(a).all():
        raise ValueError(f"{mode} image holds NaN or infinite values")
    if float(a.min(initial=0.0)) < 0:
        a = a - a.min()
        top = float(a.max(initial=0.0))
    if mode == "F" and top <= 1.0:
        scale = 255.0
    elif top <= 255 and mode != "I;16":
        scale = 1.0
    elif top <= 65535:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / top
    return np.clip(np.rint(a * scale), 0, 255)


def _gray(im: Any) -> Any:
    """Any mode Pillow reads -> an 8-bit grayscale image in the picture's own polarity."""
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        mode = "I;16" if im.mode.startswith("I;16") else im.mode
        return Image.fromarray(_to_unit_range(np.asarray(im), mode).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        a = np.asarray(rgba)
        alpha = a[..., 3].astype(np.float64) / 255.0
        ink = a[..., :3].mean(axis=-1)
        opaque = alpha > 0.5
        # strokes drawn on a transparent background: put them on the background that contrasts with them
        light_ink = bool(opaque.any()) and float(ink[opaque].mean()) > 127.5 and float(opaque.mean()) < 0.5
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("L")
    if im.mode not in ("L", "1", "P", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV: via RGB
    return im.convert("L")


def decode(
    data: bytes,
    geometry: Geometry = Geometry(),
    invert: bool | None = None,
    *,
    name: str = "image",
    max_pixels: int | None = MAX_PIXELS,
    deadline: float | None = None,
) -> Decoded:
    """Decode PNG/JPEG/PGM/BMP/TIFF/WebP/GIF bytes to uint8 pixels [C, H, W] in `geometry`.

    Args:
        geometry: the model's channels, size, resize rule and inversion rule (default: MNIST's 1x28x28).
        invert: True/False to force; None to follow the geometry (`auto`: detect dark-on-light images and invert
            them; `never`: keep them as they are).
        max_pixels: refuse an image larger than this (width x height) before decoding its pixels.
        deadline: a `time.monotonic()` after which the decode is stopped (InputError) instead of running on.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(f"{name}: empty file")
    image_guard.check_structure(data, name)
    try:
        with Image.open(image_guard.DeadlineReader(data, deadline, name), formats=image_guard.FORMATS) as im:
            im.decodermaxblock = image_guard.DECODE_BLOCK
            original = im.size
            if max_pixels is not None and original[0] * original[1] > max_pixels:
                raise InputError(
                    f"{name}: {original[0]}x{original[1]} image has {original[0] * original[1]:,} pixels; "
                    f"the limit is {max(max_pixels, 0):,}"
                )
            im.load()
            fitted = fit(_gray(im) if geometry.channels == 1 else _rgb(im), geometry)
            a = np.asarray(fitted, dtype=np.uint8)
            pixels = np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(
            f"{name}: not a recognised image (expected PNG, JPEG, PGM, PPM, BMP, TIFF, WebP or GIF)"
        ) from None
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as exc:
        raise InputError(f"{name}: cannot decode image ({str(exc)[:200]})") from None
    if invert is None:
        do_invert = geometry.invert == "auto" and geometry.channels == 1 and looks_dark_on_light(pixels[0])
    else:
        do_invert = invert
    if do_invert:
        pixels = 255 - pixels
    warning = None
    if int(pixels.max()) - int(pixels.min()) < 16:
        warning = f"{name}: decodes to a blank image (all pixels within 16 levels of {int(pixels.mean())})"
    return Decoded(pixels=pixels, inverted=do_invert, original_size=original, warning=warning)


def read_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, at most `limit` of them: a FIFO, a device or a folder is refused, not read."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: not a regular file")
    if st.st_size > limit:
        raise InputError(f"{p}: {st.st_size:,} bytes; an image file may have at most {limit:,}")
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror})") from None
    if len(data) > limit:
        raise InputError(f"{p}: more than {limit:,} bytes")
    return data


def load(path: str | os.PathLike[str], geometry: Geometry = Geometry(), invert: bool | None = None) -> Decoded:
    return decode(read_file(path), geometry, invert, name=str(path))
