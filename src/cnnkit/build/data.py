"""Datasets as uint8 numpy arrays: the bundled MNIST sample, IDX files, and torchvision downloads.

This module needs only numpy; torchvision is imported only when a download is attempted.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.resources
import io
import math
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cnnkit.contract import MAX_LABEL_CHARS
from cnnkit.errors import DataError

SAMPLE_NAME = "mnist_sample.npz"  # a package resource of cnnkit.resources
SAMPLE_SHA256 = "171b11f2f0f23273df396e83ae2bce6a2d2a754d13fa125a9382077a90a3a899"

DIGITS = tuple(str(i) for i in range(10))
FASHION = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# name -> (torchvision class name and raw folder, class names)
KNOWN = {"mnist": ("MNIST", DIGITS), "fashion-mnist": ("FashionMNIST", FASHION)}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DATASET_CHOICES = ("mnist", "fashion-mnist", "sample")
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Dataset:
    """A train/test split held once in memory as uint8 images [N, H, W] and int64 labels [N]."""

    name: str
    classes: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 over the arrays: identifies exactly which data a model saw."""
        h = hashlib.sha256()
        for arr in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def identity(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "train_size": int(len(self.train_labels)),
            "test_size": int(len(self.test_labels)),
            "sha256": self.fingerprint,
        }


def default_data_dir() -> Path:
    """The download cache: $CNNKIT_DATA_DIR, else $XDG_CACHE_HOME/cnnkit, else ~/.cache/cnnkit."""
    env = os.environ.get("CNNKIT_DATA_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cnnkit"


# ----------------------------------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped or not) into a uint8 array, checking its header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02x} is not supported (expected 0x08, unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims)  # Python integers: a crafted header cannot overflow this
    got = len(raw) - header
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise DataError(f"{path}: {kind}: {got} data bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (gzipped, with a .gz suffix added, when `compress`)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()
    path = Path(path)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_idx_dir(data_dir: Path, names: tuple[str, ...]) -> Path | None:
    """The folder holding the IDX files: `data_dir` itself, or torchvision's `data_dir/<Name>/raw`."""
    for candidate in [data_dir, *(data_dir / n / "raw" for n in names)]:
        if any(_find_idx(candidate, stem) for stem in IDX_FILES):
            return candidate
    return None


def load_idx_dir(directory: Path, name: str, classes: tuple[str, ...] | None = None) -> Dataset:
    """Load the four standard IDX files from `directory`, with consistency checks."""
    arrays = []
    for stem in IDX_FILES:
        path = _find_idx(directory, stem)
        if path is None:
            raise DataError(f"{directory / stem}: file not found (also tried {stem}.gz)")
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
    if classes is None:
        classes = read_classes_file(directory)
    if classes is None:
        classes = tuple(str(i) for i in range(int(max(y_tr.max(), y_te.max())) + 1))
    for p_y, y in ((p_ytr, y_tr), (p_yte, y_te)):
        if int(y.max()) >= len(classes):
            raise DataError(f"{p_y}: label {int(y.max())} out of range for {len(classes)} class names")
    return Dataset(name, tuple(classes), x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), str(directory))


# ------------------------------------------------------------------------------------- class names

CLASSES_FILE = "classes.txt"  # beside the IDX files: one class name per line, in label order


def check_classes(names: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    """Class names as given, or DataError naming the first that would garble a terminal, a table or a JSON key."""
    names = tuple(n.strip() for n in names)
    if not names:
        raise DataError(f"{where}: no class names")
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{where}: class {i} has an empty name")
        if len(name) > MAX_LABEL_CHARS:
            raise DataError(f"{where}: class {i} name is {len(name)} characters (at most {MAX_LABEL_CHARS})")
        if not name.isprintable():
            raise DataError(f"{where}: class {i} name {name!r} holds control characters")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{where}: class names repeat: {', '.join(dupes)}")
    return names


def parse_classes(text: str) -> tuple[str, ...]:
    """`--classes a,b,c`."""
    return check_classes(text.split(","), "--classes")


def read_classes_file(directory: Path) -> tuple[str, ...] | None:
    path = directory / CLASSES_FILE
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return check_classes([ln for ln in lines if ln.strip()], str(path))


# -------------------------------------------------------------------------------------------- sample


def load_sample(source: str | os.PathLike[str] | None = None) -> Dataset:
    """The bundled 5,000-digit MNIST sample (4,000 train / 1,000 test, stratified), checksum-verified.

    `source` reads a copy of the sample file from elsewhere (it must still match the bundled checksum).
    """
    resource = Path(source) if source is not None else importlib.resources.files("cnnkit.resources") / SAMPLE_NAME
    try:
        raw = resource.read_bytes()
    except OSError as exc:
        raise DataError(f"{resource}: bundled sample missing ({exc.strerror}); reinstall cnnkit") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SAMPLE_SHA256:
        raise DataError(f"{resource}: checksum {digest[:12]}... != expected {SAMPLE_SHA256[:12]}...; reinstall cnnkit")
    with np.load(io.BytesIO(raw)) as z:
        return Dataset(
            "mnist-sample",
            DIGITS,
            z["train_images"],
            z["train_labels"].astype(np.int64),
            z["test_images"],
            z["test_labels"].astype(np.int64),
            "bundled",
        )


def with_classes(ds: Dataset, classes: tuple[str, ...]) -> Dataset:
    """`ds` with its class names replaced (`--classes`); every label must have a name."""
    top = int(max(ds.train_labels.max(), ds.test_labels.max()))
    if top >= len(classes):
        raise DataError(f"--classes names {len(classes)} classes, but {ds.source} has labels up to {top}")
    return replace(ds, classes=tuple(classes))


@dataclass(frozen=True)
class Split:
    """Training images less a validation share held out from them (the test split stays untouched)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


VAL_SPLIT_SEED = 20240917  # fixed: the validation images do not move with --seed, so seeds compare on the same ones


def split_validation(ds: Dataset, fraction: float) -> Split:
    """Hold out `fraction` of the training images (a fixed random choice, stratified by nothing but chance)."""
    n = len(ds.train_labels)
    n_val = int(round(n * fraction))
    if fraction > 0 and n - n_val < 1:
        raise DataError(f"{ds.source}: {n} training images leave none after a {fraction:.0%} validation split")
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return Split(ds.train_images[train], ds.train_labels[train], ds.train_images[val], ds.train_labels[val])


# ------------------------------------------------------------------------------------------ download


def download(name: str, root: Path) -> Path:
    """Download a torchvision dataset's raw IDX files into `root`; return their folder."""
    tv_name, _ = KNOWN[name]
    import torchvision.datasets as tvd  # heavy; only when downloading

    cls = getattr(tvd, tv_name)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    sink = io.StringIO()
    try:
        # torchvision prints every mirror it tries; keep that out of cnnkit's output.
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError variously
        # torchvision's message lists every mirror it tried; the last line holds the actual cause
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise DataError(f"could not download {tv_name} into {root} ({reason})") from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return root / tv_name / "raw"


@dataclass(frozen=True)
class Loaded:
    dataset: Dataset
    warning: str | None = None


def load_dataset(
    name: str | None = None, data_dir: str | os.PathLike | None = None, download_ok: bool = True
) -> Loaded:
    """Resolve `--dataset`/`--data-dir` to a Dataset.

    - `name="sample"`: the bundled sample.
    - `data_dir` holding IDX files (flat or torchvision's `<Name>/raw` layout): those files.
    - `name` mnist/fashion-mnist: the cache (data_dir or default_data_dir()), downloading if needed.
    - `name=None`: MNIST, falling back to the bundled sample with a warning when it cannot be had.
    """
    if name is not None and name not in DATASET_CHOICES:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_CHOICES)}")
    if name == "sample":
        return Loaded(load_sample())
    explicit_dir = Path(data_dir) if data_dir is not None else None
    if explicit_dir is not None and not explicit_dir.is_dir():
        raise DataError(f"{explicit_dir}: data directory not found")
    key = name or "mnist"
    tv_name, classes = KNOWN[key]
    root = explicit_dir or default_data_dir()
    if explicit_dir is not None and name is None:
        # Local IDX files of unknown origin: class names are the label numbers.
        if find_idx_dir(explicit_dir, ()) is not None:
            return Loaded(load_idx_dir(explicit_dir, "idx"))
    found = find_idx_dir(root, (tv_name,))
    if found is not None:
        return Loaded(load_idx_dir(found, key, classes))
    try:
        if not download_ok:
            raise DataError(f"{tv_name} not found in {root} and downloads are disabled")
        return Loaded(load_idx_dir(download(key, root), key, classes))
    except DataError as exc:
        if name is not None:
            raise DataError(f"{exc}; put the four IDX files in --data-dir, or use --dataset sample") from None
        warning = (
            f"MNIST unavailable ({exc}); training on the bundled 5,000-image sample instead. "
            f"For full MNIST, go online or put its IDX files in {root} (or pass --data-dir)."
        )
        return Loaded(load_sample(), warning)


def load_recorded(identity: dict, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """The dataset a checkpoint was trained on, from the identity it recorded (`Dataset.identity()`).

    `data_dir` points at another copy of it. Raises DataError when it cannot be had, or when what is found is
    not the same data (SHA-256 fingerprint of the arrays).
    """
    name = identity.get("name")
    if name == "mnist-sample":
        ds = load_sample()
    elif data_dir is not None:
        ds = load_dataset(None if name == "idx" else name, data_dir, download_ok=False).dataset
    elif name == "idx":
        source = identity.get("source")
        if not source or not Path(source).is_dir():
            raise DataError(f"the IDX folder this model was trained on ({source}) is not here; pass --data-dir")
        ds = load_idx_dir(Path(source), "idx")
    elif name in KNOWN:
        ds = load_dataset(name, download_ok=False).dataset
    else:
        raise DataError(f"unknown recorded dataset {name!r}; pass --data-dir")
    expected = identity.get("sha256")
    if expected and ds.fingerprint != expected:
        raise DataError(
            f"{ds.source}: not the data this model was trained on (fingerprint {ds.fingerprint[:12]}... != "
            f"recorded {str(expected)[:12]}...)"
        )
    return ds
