"""An image folder as a Dataset: scanned (`data.folders`), its geometry chosen from the files' headers
(`data.probe`) unless given, decoded once into the memory-mapped cache (`data.cache`), reused on the next run."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data import cache, folders, probe
from cnnkit.data.dataset import Dataset
from cnnkit.errors import DataError
from cnnkit.geometry import CHANNELS, RESIZE, Geometry, default_size


@dataclass(frozen=True, kw_only=True)
class FolderOptions:
    """How an image folder becomes pixels. None: chosen from the data (and said)."""

    channels: int | None = None  # 1 or 3; default: 1 when every image is grayscale, else 3
    size: tuple[int, int] | None = None  # (height, width); default: geometry.default_size
    resize: str = "shorter-crop"
    skip_bad: bool = False  # leave out files that do not decode (counted and recorded) instead of refusing
    workers: int = 0  # decoding processes (0: one per CPU)
    cache_dir: Path | None = None  # default: <data cache>/images
    say: Callable[[str], None] | None = None
    progress: cache.Progress | None = None

    def __post_init__(self) -> None:
        if self.channels is not None and self.channels not in CHANNELS:
            raise DataError(f"--channels {self.channels}: a model takes 1 (grayscale) or 3 (RGB)")
        if self.resize not in RESIZE:
            raise DataError(f"--resize {self.resize!r}: expected one of {', '.join(RESIZE)}")

    @classmethod
    def for_geometry(cls, geometry: Geometry, **kwargs: Any) -> FolderOptions:
        """Options that decode a folder exactly as a model of `geometry` takes its images."""
        size = (geometry.height, geometry.width)
        return cls(channels=geometry.channels, size=size, resize=geometry.resize, **kwargs)

    @classmethod
    def from_request(cls, request: Any, **kwargs: Any) -> FolderOptions:
        """The options a dataset record says it was read with (`request`)."""
        if not isinstance(request, dict):
            raise DataError(f"the recorded image-folder options {str(request)[:60]} are not ones cnnkit writes")
        size = request.get("size")
        return cls(
            channels=request.get("channels"),
            size=(int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None,
            resize=str(request.get("resize", "shorter-crop")),
            skip_bad=bool(request.get("skip_bad", False)),
            **kwargs,
        )

    def request(self) -> dict[str, Any]:
        """What was asked for (the cache's key holds it; the geometry resolved from it is a function of the files)."""
        return {"channels": self.channels, "size": list(self.size) if self.size else None, "resize": self.resize,
                "skip_bad": self.skip_bad}  # fmt: skip


def load(root: Path, opts: FolderOptions, default_cache: Path) -> Dataset:
    """The Dataset of the image folder at `root`."""
    from cnnkit.data.dataset import Dataset

    say = opts.say or (lambda line: None)
    tree = folders.scan(root)
    key = cache.key_of(tree, opts.request())
    folder = (opts.cache_dir or default_cache / "images") / key[:32]
    decoded = cache.open_cached(folder)
    if decoded is None:
        t0 = time.perf_counter()
        geometry, why = _geometry(tree, opts, say)
        n = len(tree.train) + len(tree.test) + (len(tree.val) if tree.val else 0)
        size_mb = n * int(np.prod(geometry.shape)) / 2**20
        say(f"decoding {n:,} images of {tree.root} to {geometry.describe()} ({why}) into a {size_mb:,.1f} MiB cache "
            f"at {folder}, by {_workers(opts)} processes")  # fmt: skip
        decoded = cache.build(tree, geometry, folder, workers=_workers(opts), skip_bad=opts.skip_bad,
                              progress=opts.progress)  # fmt: skip
        say(f"decoded in {time.perf_counter() - t0:.1f} s")
    if decoded.n_skipped:
        say(f"skipped {decoded.n_skipped} file(s) that do not decode, e.g. {decoded.skipped[0]}")
    train_x, train_y = decoded.splits["train"]
    test_x, test_y = decoded.splits["test"]
    val = decoded.splits.get("val")
    geometry = replace(decoded.geometry, invert=polarity(train_x))
    record = {
        "kind": "image-folder",
        "split": tree.split,
        "geometry": geometry.to_dict(),
        "request": opts.request(),
        "skipped": decoded.n_skipped,
        "skipped_files": [s.split(": ", 1)[0] for s in decoded.skipped],
        "cache_key": decoded.key,
    }
    return Dataset(
        name=re.sub(r"[^A-Za-z0-9_.-]+", "-", tree.root.name).strip("-.") or "images",  # the folder's name
        classes=tree.classes,
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        val_images=val[0] if val else None,
        val_labels=val[1] if val else None,
        source=str(tree.root),
        geometry=geometry,
        record=record,
    )


def polarity(images: np.ndarray) -> str:
    """The inversion rule the data calls for: `auto` for one-channel data that is mostly light on dark (MNIST's
    convention, so a dark-on-light input is inverted to match), else `never` (RGB, or dark-on-light gray data)."""
    if images.shape[1] != 1 or not len(images):
        return "never"
    sample = np.asarray(images[:: max(1, len(images) // 1000), 0])
    border = np.concatenate([sample[:, 0], sample[:, -1], sample[:, :, 0], sample[:, :, -1]], axis=1)
    return "auto" if float((border.mean(axis=1) <= 127.5).mean()) >= 0.5 else "never"


def _geometry(tree: folders.Tree, opts: FolderOptions, say: Callable[[str], None]) -> tuple[Geometry, str]:
    """The geometry asked for, with what was not asked for read from the files' headers; and why."""
    if opts.channels is not None and opts.size is not None:
        (h, w), channels = opts.size, opts.channels
        return Geometry(channels=channels, height=h, width=w, resize=opts.resize, invert="never"), "as asked"
    paths = [*tree.train.paths, *tree.test.paths, *(tree.val.paths if tree.val else ())]
    say(f"reading the headers of {len(paths):,} files under {tree.root}")
    seen = probe.probe(paths, _workers(opts), opts.progress)
    if seen.errors and not opts.skip_bad:
        raise cache.bad_files(seen.errors)
    good = sum(seen.sizes.values())
    channels = opts.channels or (1 if seen.gray == good else 3)
    why = [f"{'every image is grayscale' if channels == 1 else f'{good - seen.gray:,} colour images'}"]
    if channels == 3 and seen.gray:
        why.append(f"{seen.gray:,} grayscale images repeated in 3 channels")
    if opts.size is not None:
        size = opts.size
    else:
        size, size_why = default_size(set(seen.sizes))
        why.append(size_why)
    return Geometry(channels=channels, height=size[0], width=size[1], resize=opts.resize, invert="never"), "; ".join(
        why
    )


def _workers(opts: FolderOptions) -> int:
    return opts.workers or max(1, len(os.sched_getaffinity(0)))
