"""A first look at an image folder's files, from their headers only (no pixels decoded): their sizes and whether
every one is grayscale, which choose the input geometry (`data.imagefolder`), and the files that are no image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnkit.data.cache import CHUNK, Progress, parallel_map

GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True, kw_only=True)
class Probe:
    sizes: dict[tuple[int, int], int]  # (width, height) -> how many files
    gray: int  # files whose pixels are grayscale (a gray mode, or a palette of grays)
    errors: list[str]  # "path: why" of files no image could be read from


def probe(paths: Sequence[str], workers: int, progress: Progress | None = None) -> Probe:
    chunks = [list(paths[i : i + CHUNK]) for i in range(0, len(paths), CHUNK)]
    sizes: dict[tuple[int, int], int] = {}
    errors: list[str] = []
    gray, done = 0, 0
    if progress is not None:
        progress("scan", 0, len(paths))  # the clock starts here
    for part in parallel_map(_probe_chunk, chunks, workers):
        gray, done = _merge(part, sizes, errors, gray, done, len(paths), progress)
    return Probe(sizes=sizes, gray=gray, errors=errors)


def _merge(
    part: list[tuple[tuple[int, int], bool] | str],
    sizes: dict[tuple[int, int], int],
    errors: list[str],
    gray: int,
    done: int,
    total: int,
    progress: Progress | None,
) -> tuple[int, int]:
    for entry in part:
        if isinstance(entry, str):
            errors.append(entry)
        else:
            size, is_gray = entry
            sizes[size] = sizes.get(size, 0) + 1
            gray += is_gray
    done += len(part)
    if progress is not None:
        progress("scan", done, total)
    return gray, done


def _probe_chunk(names: list[str]) -> list[tuple[tuple[int, int], bool] | str]:
    from PIL import Image, UnidentifiedImageError

    from cnnkit.runtime import image_guard

    out: list[tuple[tuple[int, int], bool] | str] = []
    for name in names:
        try:
            with Image.open(name, formats=image_guard.FORMATS) as im:
                out.append((im.size, _is_gray(im)))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            what = "not a recognised image" if isinstance(exc, UnidentifiedImageError) else str(exc)[:120]
            out.append(f"{name}: {what}")
    return out


def _is_gray(im: object) -> bool:
    mode = getattr(im, "mode", "")
    if mode in GRAY_MODES:
        return True
    if mode in ("P", "PA"):
        palette = im.getpalette() or []  # type: ignore[attr-defined]
        triples = zip(palette[0::3], palette[1::3], palette[2::3])
        return all(r == g == b for r, g, b in triples)
    return False
