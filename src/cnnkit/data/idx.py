"""IDX files (the format MNIST and Fashion-MNIST ship in): parse, write, and find the four standard files of a
dataset. numpy only."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np

from cnnkit.errors import DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


MAX_IDX_BYTES = 2 * 1024**3  # one IDX file's data: EMNIST's largest is about 0.7 GB


def _header(head: bytes, path: Path) -> tuple[int, tuple[int, ...]]:
    """(header length, dims) of an IDX file of unsigned bytes, or DataError."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {head[:4].hex() or 'empty'})")
    if head[2] != 0x08:
        raise DataError(f"{path}: IDX data type 0x{head[2]:02x} is not supported (expected 0x08, unsigned byte)")
    ndim = head[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(head) < header:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    if 0 in dims:  # no data; and numpy refuses shapes like (0, 2**31, 2**31) outright
        raise DataError(f"{path}: IDX header declares a dimension of 0 (shape {dims}): no data")
    return header, dims


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped or not) into a uint8 array, checking its header. A gzipped file
    is decompressed no further than its header's size (plus one byte, to see trailing data): a gzip bomb costs
    nothing beyond what the header declares, and that is bounded by MAX_IDX_BYTES."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as raw_file:
            gz = raw_file.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
            _, dims = _header(head, path)
            expected = math.prod(dims)  # Python integers: a crafted header cannot overflow this
            if expected > MAX_IDX_BYTES:
                raise DataError(f"{path}: header declares {expected:,} bytes of data (at most {MAX_IDX_BYTES:,})")
            data = f.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        shown = f"{len(data)}" if len(data) <= expected else f"more than {expected}"
        raise DataError(f"{path}: {kind}: {shown} data bytes, expected {expected} for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (gzipped, with a .gz suffix added, when `compress`)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()
    path = Path(path)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def names_for(stem: str) -> tuple[str, ...]:
    """The names real copies give a standard file: torchvision's `train-images-idx3-ubyte`, the dotted
    `train-images.idx3-ubyte` many published copies use, each gzipped or not."""
    dotted = stem.replace("-idx", ".idx")
    return (stem, stem + ".gz", dotted, dotted + ".gz")


def find_file(directory: Path, stem: str) -> Path | None:
    """`directory/stem` under any of the names real copies use (`names_for`)."""
    for name in names_for(stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_dir(data_dir: Path, names: tuple[str, ...]) -> Path | None:
    """The folder holding the IDX files: `data_dir` itself, or torchvision's `data_dir/<Name>/raw`."""
    for candidate in [data_dir, *(data_dir / n / "raw" for n in names)]:
        if any(find_file(candidate, stem) for stem in FILES):
            return candidate
    return None


def read_split(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four standard files of `directory`: train images [N,H,W], train labels [N], test images, test labels,
    with consistency checks (labels as int64)."""
    arrays = []
    for stem in FILES:
        path = find_file(directory, stem)
        if path is None:
            raise DataError(f"{directory / stem}: file not found (also tried {', '.join(names_for(stem)[1:])})")
        arrays.append((path, read_idx(path)))
    (p_xtr, x_tr), (p_ytr, y_tr), (p_xte, x_te), (p_yte, y_te) = arrays
    for (p_x, x), (p_y, y) in (((p_xtr, x_tr), (p_ytr, y_tr)), ((p_xte, x_te), (p_yte, y_te))):
        if x.ndim != 3:
            raise DataError(f"{p_x}: expected images of shape [N, H, W], got {x.shape}")
        if y.ndim != 1:
            raise DataError(f"{p_y}: expected labels of shape [N], got {y.shape}")
        if len(x) == 0:
            raise DataError(f"{p_x}: holds no images")
        if len(x) != len(y):
            raise DataError(f"{p_y}: {len(y)} labels for {len(x)} images in {p_x.name}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{p_xte}: image size {x_te.shape[1:]} differs from training images {x_tr.shape[1:]}")
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)
