"""Image folders as people have them: one subfolder per class (torchvision's ImageFolder convention: classes are the
sorted folder names), or `train/` and `test/` (and optionally `val/`) trees of that shape. Finds the files and their
labels, and makes the seeded per-class test split when there is none; decoding is `data.cache`'s job.

The rules for bad trees (each refused in one line naming the folder): no class folders, a class folder without
images, a single class, more classes than a model may have, test or val classes that training lacks, a class name
the one class-name rule refuses, a symlink loop. Files without an image extension (README.txt, .DS_Store) and
hidden entries are ignored, as ImageFolder ignores them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnkit.errors import DataError
from cnnkit.spec import CONFIG_BOUNDS, class_names_problem

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = ("train", "test", "val")
TEST_FRACTION = 0.2  # of each class, when the tree has no test/ of its own
SPLIT_SEED = 20241202  # fixed: the same tree always splits the same way
MAX_CLASSES = int(CONFIG_BOUNDS["num_classes"][1])


@dataclass(frozen=True, kw_only=True)
class Files:
    """Image files and their labels (indices into the tree's classes), in a fixed order."""

    paths: tuple[str, ...]  # strings, not Paths: 70,000 Path objects cost a second a run
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True, kw_only=True)
class Tree:
    root: Path  # absolute
    classes: tuple[str, ...]
    train: Files
    test: Files
    val: Files | None
    split: str  # how the test split was had: "folders" (train/ and test/), or the seeded per-class split made


def is_image_tree(root: Path) -> bool:
    """`root` looks like an image folder: it has a train/ folder, or a subfolder holding an image file."""
    if (root / "train").is_dir():
        return True
    try:
        subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return False
    return any(any(_images_in(d, set(), limit=1)) for d in subdirs[:64])


def scan(root: Path) -> Tree:
    """The tree at `root` with its classes and files, or DataError naming what is wrong."""
    root = root.resolve()
    if (root / "train").is_dir():
        classes, train = _classes_and_files(root / "train", None)
        if not (root / "test").is_dir():
            raise DataError(f"{root}: has train/ but no test/ (put the test images in test/<class>/)")
        _, test = _classes_and_files(root / "test", classes)
        val = _classes_and_files(root / "val", classes)[1] if (root / "val").is_dir() else None
        return Tree(root=root, classes=classes, train=train, test=test, val=val, split="folders")
    classes, files = _classes_and_files(root, None)
    train, test = split_per_class(files, TEST_FRACTION, SPLIT_SEED)
    split = f"seeded per-class split: {TEST_FRACTION:.0%} of each class for test (seed {SPLIT_SEED})"
    return Tree(root=root, classes=classes, train=train, test=test, val=None, split=split)


def split_per_class(files: Files, fraction: float, seed: int) -> tuple[Files, Files]:
    """(train, test): `fraction` of each class's files (at least one where a class has two or more) for test,
    chosen by a generator seeded with `seed`, so the same tree always splits the same way."""
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for label in np.unique(files.labels):
        members = np.flatnonzero(files.labels == label)
        n_test = min(len(members) - 1, max(1, round(len(members) * fraction))) if len(members) > 1 else 0
        test_idx += rng.permutation(members)[:n_test].tolist()
    is_test = np.zeros(len(files), bool)
    is_test[test_idx] = True

    def pick(mask: np.ndarray) -> Files:
        idx = np.flatnonzero(mask)
        return Files(paths=tuple(files.paths[i] for i in idx), labels=files.labels[idx])

    return pick(~is_test), pick(is_test)


def _classes_and_files(folder: Path, classes: tuple[str, ...] | None) -> tuple[tuple[str, ...], Files]:
    """The class folders of `folder` (sorted) and their image files; with `classes` given (a test or val tree), its
    folders must be among them and keep their labels."""
    try:
        found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list ({exc.strerror})") from None
    if not found:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image files>)")
    if classes is None:
        if len(found) < 2:
            raise DataError(f"{folder}: one class folder ({found[0]}); a classifier needs at least two")
        if len(found) > MAX_CLASSES:
            raise DataError(f"{folder}: {len(found):,} class folders; a model may have at most {MAX_CLASSES:,}")
        problem = class_names_problem(found)
        if problem:
            raise DataError(f"{folder}: folder names are the class names, and {problem}")
        classes = tuple(found)
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{folder / unknown[0]}: class {unknown[0]!r} is not among the training classes")
    label_of = {name: i for i, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    visited: set[tuple[int, int]] = set()
    for name in found:
        mine = sorted(_images_in(folder / name, visited))
        if not mine:
            raise DataError(f"{folder / name}: class folder holds no images ({', '.join(EXTENSIONS)})")
        paths += mine
        labels += [label_of[name]] * len(mine)
    return classes, Files(paths=tuple(paths), labels=np.asarray(labels, np.int64))


def _images_in(folder: Path, visited: set[tuple[int, int]], limit: int | None = None) -> list[str]:
    """Image files under `folder`, following symbolic links (as ImageFolder does) but refusing a loop."""
    out: list[str] = []
    for top, dirs, names in os.walk(folder, followlinks=True, onerror=_raise):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in visited:
            raise DataError(f"{top}: a symbolic link loops back to a folder already read")
        visited.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if not n.startswith(".") and n.lower().endswith(EXTENSIONS):
                out.append(os.path.join(top, n))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def _raise(exc: OSError) -> None:
    raise DataError(f"{exc.filename}: cannot list ({exc.strerror})")
