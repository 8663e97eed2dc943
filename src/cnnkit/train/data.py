"""Training data: the validation split held out of the training images, the normalisation measured on what is
left, and the arrays moved once to the device as uint8."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.datasets import Dataset
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
    """Hold out `fraction` of the training images (a fixed random choice, stratified by nothing but chance)."""
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


def normalisation(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of the training pixels on the [0, 1] scale."""
    x = images.astype(np.float32) * (1.0 / 255.0)
    return float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))


def to_device(images: np.ndarray, labels: np.ndarray, device: Any) -> tuple[Any, Any]:
    """uint8 images [N,H,W] -> [N,1,H,W] and int64 labels on `device` (pinned first on CUDA), once per run."""
    from cnnkit.train.model import tensor_from

    x = tensor_from(images).unsqueeze(1)
    y = tensor_from(labels.astype(np.int64, copy=False))
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
