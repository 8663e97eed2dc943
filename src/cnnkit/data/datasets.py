"""Datasets as uint8 numpy arrays [N, C, H, W]: the bundled MNIST sample, IDX folders, image folders
(`data.folders`), and (through a downloader the torch side passes in) torchvision downloads. numpy only:
`cnnkit evaluate` uses it in the runtime-only install."""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data import folders, idx, imagefolder
from cnnkit.data.dataset import Dataset
from cnnkit.data.imagefolder import FolderOptions
from cnnkit.errors import DataError
from cnnkit.geometry import Geometry
from cnnkit.spec import DATASETS, class_names_problem

SAMPLE_NAME = "mnist_sample.npz"  # a package resource of cnnkit.resources
SAMPLE_SHA256 = "171b11f2f0f23273df396e83ae2bce6a2d2a754d13fa125a9382077a90a3a899"
CLASSES_FILE = "classes.txt"  # beside the IDX files: one class name per line, in label order

DIGITS = tuple(str(i) for i in range(10))
FASHION = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# name -> (torchvision class name and raw folder, class names)
KNOWN = {"mnist": ("MNIST", DIGITS), "fashion-mnist": ("FashionMNIST", FASHION)}

#: fetches a known dataset's raw IDX files into a folder and returns where they are (train.download.download)
Downloader = Callable[[str, Path], Path]


def default_data_dir() -> Path:
    """The download cache: $CNNKIT_DATA_DIR, else $XDG_CACHE_HOME/cnnkit, else ~/.cache/cnnkit."""
    env = os.environ.get("CNNKIT_DATA_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cnnkit"


# ------------------------------------------------------------------------------------- class names


def check_classes(names: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    """Class names as given (stripped), or DataError naming the first problem (spec.class_names_problem)."""
    stripped = tuple(n.strip() for n in names)
    if not stripped:
        raise DataError(f"{where}: no class names")
    problem = class_names_problem(list(stripped))
    if problem:
        raise DataError(f"{where}: {problem}")
    return stripped


def parse_classes(text: str) -> tuple[str, ...]:
    """`--classes a,b,c`."""
    return check_classes(text.split(","), "--classes")


def read_classes_file(directory: Path, name: str = CLASSES_FILE) -> tuple[str, ...] | None:
    """The class names in `directory`/`name`, one per line in label order; None when there is no such file."""
    path = directory / name
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return check_classes([ln for ln in lines if ln.strip()], str(path))


def with_classes(ds: Dataset, classes: tuple[str, ...]) -> Dataset:
    """`ds` with its class names replaced (`--classes`); every label must have a name."""
    top = int(max(ds.train_labels.max(), ds.test_labels.max()))
    if top >= len(classes):
        raise DataError(f"--classes names {len(classes)} classes, but {ds.source} has labels up to {top}")
    return replace(ds, classes=tuple(classes))


# ----------------------------------------------------------------------------------- IDX and sample


def load_idx_dir(directory: Path, name: str, classes: tuple[str, ...] | None = None) -> Dataset:
    """The four standard IDX files of `directory`; class names from `classes`, classes.txt, or the labels."""
    x_tr, y_tr, x_te, y_te = idx.read_split(directory)
    if classes is None:
        classes = read_classes_file(directory)
    if classes is None:
        classes = tuple(str(i) for i in range(int(max(y_tr.max(), y_te.max())) + 1))
    for stem, y in ((idx.FILES[1], y_tr), (idx.FILES[3], y_te)):
        if int(y.max()) >= len(classes):
            where = idx.find_file(directory, stem)
            raise DataError(f"{where}: label {int(y.max())} out of range for {len(classes)} class names")
    return Dataset(
        name=name,
        classes=tuple(classes),
        train_images=x_tr[:, None],
        train_labels=y_tr,
        test_images=x_te[:, None],
        test_labels=y_te,
        source=str(Path(directory).resolve()),  # absolute: a checkpoint finds it again from anywhere
        geometry=idx_geometry(x_tr),
    )


def idx_geometry(images: np.ndarray) -> Geometry:
    """One-channel IDX images [N, H, W]: their size; stretched (every image is that size already, so the rule
    matters only to a caller's other images), and auto-inverted when most are light on dark, as MNIST's are."""
    h, w = images.shape[1:]
    return Geometry(channels=1, height=h, width=w, resize="stretch", invert=imagefolder.polarity(images[:, None]))


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
            name="mnist-sample",
            classes=DIGITS,
            train_images=z["train_images"][:, None],
            train_labels=z["train_labels"].astype(np.int64),
            test_images=z["test_images"][:, None],
            test_labels=z["test_labels"].astype(np.int64),
            source="bundled",
        )


# ------------------------------------------------------------------------------------ choosing one


@dataclass(frozen=True, kw_only=True)
class Loaded:
    dataset: Dataset
    warning: str | None = None


def load_dataset(
    name: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: Downloader | None = None,
    folder: FolderOptions | None = None,
) -> Loaded:
    """Resolve `--dataset`/`--data-dir` to a Dataset.

    - `name="sample"`: the bundled sample.
    - `data_dir` holding an image folder (class subfolders, or train/ and test/ trees of them): decoded by `folder`'s
      options into the memory-mapped cache (`data.imagefolder`).
    - `data_dir` holding IDX files (flat or torchvision's `<Name>/raw` layout, any naming real copies use).
    - `name` mnist/fashion-mnist: the cache (data_dir or default_data_dir()), fetched by `download` if needed.
    - `name=None` without `data_dir`: MNIST (downloaded by `download` when given), falling back to the bundled sample
      with a warning when it cannot be had. An explicit `data_dir` never falls back: what is not there is an error.
    """
    if name is not None and name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "sample":
        return Loaded(dataset=load_sample())
    explicit_dir = Path(data_dir) if data_dir is not None else None
    if explicit_dir is not None and not explicit_dir.is_dir():
        raise DataError(f"{explicit_dir}: data directory not found")
    key = name or "mnist"
    tv_name, classes = KNOWN[key]
    root = explicit_dir or default_data_dir()
    if explicit_dir is not None and name is None:
        if idx.find_dir(explicit_dir, ()) is not None:
            return Loaded(dataset=load_idx_dir(explicit_dir, "idx"))  # IDX files of unknown origin: numbered classes
        if folders.is_image_tree(explicit_dir):
            return Loaded(dataset=imagefolder.load(explicit_dir, folder or FolderOptions(), default_data_dir()))
        for known, (tv_folder, names) in KNOWN.items():  # torchvision's <Name>/raw layout
            if idx.find_dir(explicit_dir, (tv_folder,)) is not None:
                return Loaded(dataset=load_idx_dir(explicit_dir / tv_folder / "raw", known, names))
        raise DataError(
            f"{explicit_dir}: neither IDX files ({idx.FILES[0]}, ...) nor class folders of images "
            f"({explicit_dir}/<class>/<image files>)"
        )
    found = idx.find_dir(root, (tv_name,))
    if found is not None:
        return Loaded(dataset=load_idx_dir(found, key, classes))
    try:
        if download is None:
            raise DataError(f"{tv_name} not found in {root} and downloads are disabled")
        return Loaded(dataset=load_idx_dir(download(key, root), key, classes))
    except DataError as exc:
        if name is not None:
            raise DataError(f"{exc}; put the four IDX files in --data-dir, or use --dataset sample") from None
        warning = (
            f"MNIST unavailable ({exc}); training on the bundled 5,000-image sample instead. "
            f"For full MNIST, go online or put its IDX files in {root} (or pass --data-dir)."
        )
        return Loaded(dataset=load_sample(), warning=warning)


def load_recorded(
    identity: dict[str, Any],
    data_dir: str | os.PathLike[str] | None = None,
    folder_kwargs: dict[str, Any] | None = None,
) -> Dataset:
    """The dataset a checkpoint was trained on, from the identity it recorded (`Dataset.identity()`).

    `data_dir` points at another copy of it; `folder_kwargs` (say, progress) go to an image folder's options, the
    rest of which come from the record. Raises DataError when it cannot be had, or when what is found is
    not the same data (SHA-256 fingerprint of the arrays). Never downloads.
    """
    name = identity.get("name")
    if identity.get("kind") == "image-folder":
        source = identity.get("source")
        root = Path(data_dir) if data_dir is not None else Path(str(source))
        if data_dir is None and (not source or not root.is_absolute() or not root.is_dir()):
            raise DataError(f"the image folder this model was trained on ({source}) is not here; pass --data-dir")
        if not root.is_dir():
            raise DataError(f"{root}: data directory not found")
        ds = imagefolder.load(root, FolderOptions.from_request(identity.get("request"), **(folder_kwargs or {})),
                              default_data_dir())  # fmt: skip
    elif name == "external":  # train.external: a model made of weights trained elsewhere
        raise DataError(f"the model was made of weights trained elsewhere ({identity.get('source')}): it records no "
                        "test split")  # fmt: skip
    elif name == "mnist-sample":
        ds = load_sample()
    elif data_dir is not None:
        ds = load_dataset(None if name == "idx" else name, data_dir).dataset
    elif name == "idx":
        source = identity.get("source")
        # an export records only the folder's name: never looked for under whatever the working directory is
        if not source or not Path(source).is_absolute() or not Path(source).is_dir():
            raise DataError(f"the IDX folder this model was trained on ({source}) is not here; pass --data-dir")
        ds = load_idx_dir(Path(source), "idx")
    elif name in KNOWN:
        ds = load_dataset(name).dataset
    else:
        raise DataError(f"unknown recorded dataset {name!r}; pass --data-dir")
    expected = identity.get("sha256")
    if expected and ds.fingerprint != expected:
        raise DataError(
            f"{ds.source}: not the data this model was trained on (fingerprint {ds.fingerprint[:12]}... != "
            f"recorded {str(expected)[:12]}...)"
        )
    return ds
