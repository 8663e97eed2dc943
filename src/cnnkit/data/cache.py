"""An image folder decoded once, in parallel, into uint8 [N, C, H, W] files that later runs memory-map.

The cache is keyed by the files (relative path, size, modification time, label) and by the geometry asked for, so
a changed file or another `--image-size` makes a new one and nothing stale is read. It is written into a temporary
folder and renamed into place whole: an interrupted decode leaves no cache behind.

Bad files (not an image, truncated, over the pixel limit) are refused, naming the first, unless `skip_bad`: then
they are left out, and their count and first names are recorded with the dataset.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.folders import Files, Tree
from cnnkit.errors import CnnkitError, DataError
from cnnkit.geometry import Geometry

CACHE_FORMAT = "cnnkit-image-cache/1"
CHUNK = 256  # files per task handed to a worker
SHOWN_BAD = 20  # bad file names kept in the record

#: progress(phase, done, total): how a caller shows the work (a bar, lines); phase "scan" or "decode <split>"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class Decoded:
    """The arrays of a decoded tree (memory-mapped, read-only) and what the decode found."""

    geometry: Geometry
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (images [N, C, H, W], labels [N])
    key: str
    folder: Path
    skipped: list[str]  # "path: why" of the files left out (at most SHOWN_BAD)
    n_skipped: int
    reused: bool


def key_of(tree: Tree, request: dict[str, Any]) -> str:
    """SHA-256 over the cache format, the geometry asked for, and every file's split, path, size, mtime and label."""
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **request}, sort_keys=True).encode())
    cut = len(str(tree.root)) + 1  # every path is under the root: the rest of it is the relative path
    for split, files in _splits(tree).items():
        lines = []
        for path, label in zip(files.paths, files.labels.tolist()):
            try:
                st = os.stat(path)
            except OSError as exc:
                raise DataError(f"{path}: cannot read ({exc.strerror})") from None
            lines.append(f"{split}\0{path[cut:]}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n")
        h.update("".join(lines).encode())
    return h.hexdigest()


def open_cached(folder: Path) -> Decoded | None:
    """The cache in `folder`, memory-mapped, or None when there is none (or it is not one this version wrote)."""
    try:
        index = json.loads((folder / "index.json").read_text())
        if index.get("format") != CACHE_FORMAT:
            return None
        geometry = Geometry.from_dict(index["geometry"], str(folder))
        splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, n in index["sizes"].items():
            images = np.memmap(folder / f"{name}.u8", np.uint8, mode="r", shape=(int(n), *geometry.shape))
            splits[name] = (images, np.load(folder / f"{name}.labels.npy"))
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return None
    return Decoded(
        geometry=geometry,
        splits=splits,
        key=folder.name,
        folder=folder,
        skipped=list(index.get("skipped", [])),
        n_skipped=int(index.get("n_skipped", 0)),
        reused=True,
    )


def build(
    tree: Tree, geometry: Geometry, folder: Path, *, workers: int, skip_bad: bool, progress: Progress | None
) -> Decoded:
    """Decode every file of `tree` into `folder` (made whole or not at all)."""
    need = sum(len(f) for f in _splits(tree).values()) * int(np.prod(geometry.shape))
    folder.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder.parent).free
    if need > free:
        raise DataError(f"{folder.parent}: the decoded images need {need / 2**20:,.0f} MiB, {free / 2**20:,.0f} free")
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        sizes, bad = {}, []
        for name, files in _splits(tree).items():
            shown = (lambda done, total, name=name: progress(f"decode {name}", done, total)) if progress else None
            kept, errors = _decode_split(files, geometry, tmp / f"{name}.u8", workers, shown)
            bad += errors
            if errors and not skip_bad:
                raise bad_files(errors)
            if not kept.any():
                raise DataError(f"{tree.root / name}: no image in this split could be decoded")
            sizes[name] = _compact(tmp / f"{name}.u8", kept, geometry)
            np.save(tmp / f"{name}.labels.npy", files.labels[kept])
        index = {
            "format": CACHE_FORMAT,
            "geometry": geometry.to_dict(),
            "sizes": sizes,
            "skipped": bad[:SHOWN_BAD],
            "n_skipped": len(bad),
            "root": str(tree.root),
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another run made it meanwhile: theirs is the same decode
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    done = open_cached(folder)
    if done is None:
        raise DataError(f"{folder}: the decoded cache just written cannot be read back")
    return replace(done, reused=False)


def _splits(tree: Tree) -> dict[str, Files]:
    return {"train": tree.train, "test": tree.test, **({"val": tree.val} if tree.val is not None else {})}


def _decode_split(
    files: Files, geometry: Geometry, path: Path, workers: int, progress: Callable[[int, int], None] | None
) -> tuple[np.ndarray, list[str]]:
    """Decode `files` into a new [N, C, H, W] file at `path` by `workers` processes; (decoded-ok mask, errors)."""
    n = len(files)
    np.memmap(path, np.uint8, mode="w+", shape=(n, *geometry.shape)).flush()
    tasks = [(str(path), n, geometry, start, list(files.paths[start : start + CHUNK]))
             for start in range(0, n, CHUNK)]  # fmt: skip
    kept = np.ones(n, bool)
    errors: list[str] = []
    done = 0
    if progress is not None:
        progress(0, n)  # the clock starts here
    for start, failures, count in parallel_map(_decode_chunk, tasks, workers):
        for offset, message in failures:
            kept[start + offset] = False
            errors.append(message)
        done += count
        if progress is not None:
            progress(done, n)
    return kept, errors


def parallel_map(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int) -> Any:
    """`fn` over `tasks` in order, by `workers` processes (in this one for a single worker or task): the loader's
    one pool, started by forkserver so that no process holding torch's threads is forked."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(fn, tasks)


def bad_files(errors: list[str]) -> DataError:
    """The one refusal of files that are no usable image: the first named, the others counted."""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return DataError(f"{errors[0]}{more}; fix or remove it, or pass --skip-bad to leave such files out")


def _decode_chunk(task: tuple[str, int, Geometry, int, list[str]]) -> tuple[int, list[tuple[int, str]], int]:
    """A worker: decode a chunk of files into their rows of the shared file; (start, [(offset, error)], count)."""
    from cnnkit.runtime import images

    path, n, geometry, start, names = task
    out = np.memmap(path, np.uint8, mode="r+", shape=(n, *geometry.shape))
    failures = []
    for i, name in enumerate(names):
        try:
            out[start + i] = images.decode(images.read_file(name), geometry, invert=False, name=name).pixels
        except CnnkitError as exc:
            failures.append((i, str(exc)))
    out.flush()
    return start, failures, len(names)


def _compact(path: Path, kept: np.ndarray, geometry: Geometry) -> int:
    """Drop the rows of files that failed from the file at `path`, in place; the number of rows left."""
    n_kept = int(kept.sum())
    if n_kept == len(kept):
        return n_kept
    arr = np.memmap(path, np.uint8, mode="r+", shape=(len(kept), *geometry.shape))
    for dst, src in enumerate(np.flatnonzero(kept)):
        if dst != src:
            arr[dst] = arr[src]
    arr.flush()
    del arr
    os.truncate(path, n_kept * int(np.prod(geometry.shape)))
    return n_kept
