"""Training data: the validation split held out of the training images, the normalisation measured on what is
left, and the arrays moved once to the device as uint8."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.data.dataset import Dataset
from cnnkit.errors import DataError

VAL_SPLIT_SEED = 20240917  # fixed: the validation images do not move with --seed, so seeds compare on the same ones


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


def to_device(images: np.ndarray, labels: np.ndarray, device: Any) -> tuple[Any, Any]:
    """uint8 images [N,C,H,W] and int64 labels on `device` (pinned first on CUDA), once per run."""
    from cnnkit.train.model import tensor_from

    x = tensor_from(np.ascontiguousarray(images))
    y = tensor_from(labels.astype(np.int64, copy=False))
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def check_fits(ds: Dataset, device: Any) -> None:
    """DataError, before anything is copied, when the decoded set will not fit in the device's free memory (the
    whole set lives there as uint8 for the run; streaming it batch by batch from the memory-mapped cache is not
    built)."""
    need = sum(int(a.nbytes) for a in (ds.train_images, ds.test_images, ds.val_images) if a is not None)
    free = _free_bytes(device)
    if free is not None and need > 0.8 * free:
        where = "GPU" if device.type == "cuda" else "RAM"
        raise DataError(
            f"{ds.source}: the decoded images take {need / 2**30:.1f} GiB and the {where} has {free / 2**30:.1f} "
            "GiB free; training holds the whole set there (a smaller --image-size makes it smaller)"
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
