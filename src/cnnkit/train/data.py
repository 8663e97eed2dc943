"""Training data: the validation split held out of the training images, the normalisation measured on what is
left, and the arrays moved once to the device as uint8."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.data.dataset import Dataset
from cnnkit.errors import DataError

VAL_SPLIT_SEED = 20240917  # fixed: the validation images do not move with --seed, so seeds compare on the same ones


class Rows:
    """Rows `index` of a memory-mapped array, read only when indexed (`rows[i:j]`, `rows[idx]`) or converted
    (`np.asarray`): a validation split of a set larger than RAM is held out without copying the rest."""

    def __init__(self, array: np.ndarray, index: np.ndarray):
        self.array, self.index = array, index
        self.shape = (len(index), *array.shape[1:])
        self.dtype = array.dtype
        self.nbytes = int(np.prod(self.shape)) * array.dtype.itemsize

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.array[self.index[key]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.array[self.index]
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True, kw_only=True)
class Split:
    """Training images less a validation share held out from them (the test split stays untouched)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def split_validation(ds: Dataset, fraction: float) -> Split:
    """Hold out `fraction` of the training images (a fixed random choice, stratified by nothing but chance); a
    dataset with a validation split of its own (an image folder's val/) keeps it instead."""
    if ds.val_images is not None and ds.val_labels is not None:
        return Split(
            train_images=ds.train_images,
            train_labels=ds.train_labels,
            val_images=ds.val_images,
            val_labels=ds.val_labels,
        )
    n = len(ds.train_labels)
    n_val = int(round(n * fraction))
    if fraction > 0 and n - n_val < 1:
        raise DataError(f"{ds.source}: {n} training images leave none after a {fraction:.0%} validation split")
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    if isinstance(ds.train_images, np.memmap):  # an image folder's cache: rows read when used, never copied whole
        return Split(
            train_images=Rows(ds.train_images, train),  # type: ignore[arg-type]
            train_labels=ds.train_labels[train],
            val_images=Rows(ds.train_images, val),  # type: ignore[arg-type]
            val_labels=ds.train_labels[val],
        )
    return Split(
        train_images=ds.train_images[train],
        train_labels=ds.train_labels[train],
        val_images=ds.train_images[val],
        val_labels=ds.train_labels[val],
    )


def normalisation(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 training pixels [N, C, H, W] on the [0, 1] scale, summed in float64 a
    chunk of images at a time (a memory-mapped set is never held whole as floats)."""
    c = images.shape[1]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(images), chunk):
        x = np.asarray(images[i : i + chunk], dtype=np.float64) * (1.0 / 255.0)
        total += x.sum(axis=(0, 2, 3))
        sq += np.square(x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(sq / max(count, 1) - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def to_device(images: np.ndarray, labels: np.ndarray, device: Any, stream: bool = False) -> tuple[Any, Any]:
    """uint8 images [N,C,H,W] and int64 labels on `device` (pinned first on CUDA), once per run; with `stream`,
    the labels only (the images stay where they are, read a batch at a time: `epoch.gather`)."""
    from cnnkit.train.model import tensor_from

    if stream:
        return images, tensor_from(labels.astype(np.int64, copy=False)).to(device)
    x = tensor_from(np.ascontiguousarray(images))
    y = tensor_from(labels.astype(np.int64, copy=False))
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def stream_reason(ds: Dataset, device: Any) -> str:
    """Why the training set is streamed from the host batch by batch instead of held on the device for the run
    (empty: it fits in 80% of the device's free memory, and is copied there once)."""
    need = sum(int(a.nbytes) for a in (ds.train_images, ds.test_images, ds.val_images) if a is not None)
    free = _free_bytes(device)
    if free is None or need <= 0.8 * free:
        return ""
    where = "GPU" if device.type == "cuda" else "RAM"
    return (
        f"the decoded images take {need / 2**30:.1f} GiB and the {where} has {free / 2**30:.1f} GiB free: "
        "streamed from the memory-mapped cache batch by batch"
    )


def _free_bytes(device: Any) -> int | None:
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
