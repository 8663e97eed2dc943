"""The Dataset every command works from: a train/test split of uint8 pixels and labels, what they are, and where
they came from. numpy only."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.geometry import Geometry


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A train/test split held once as uint8 images [N, C, H, W] (in memory, or memory-mapped from the decoded
    cache of an image folder) and int64 labels [N]."""

    name: str
    classes: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    geometry: Geometry = Geometry()  # what the pixels are: channels, size, and the rules they were made by
    record: dict[str, Any] = field(default_factory=dict)  # how it was read: split, skipped files, cache (folders)
    val_images: np.ndarray | None = None  # a validation split of its own (an image folder's val/)
    val_labels: np.ndarray | None = None

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 over the arrays: identifies exactly which data a model saw."""
        h = hashlib.sha256()
        for arr in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            for i in range(0, len(arr), 4096):  # a chunk at a time: a memory-mapped set is never copied whole
                h.update(np.ascontiguousarray(arr[i : i + 4096]).data)
        return h.hexdigest()

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "train_size": int(len(self.train_labels)),
            "test_size": int(len(self.test_labels)),
            "sha256": self.fingerprint,
            **self.record,
        }
