"""`cnnkit evaluate`: accuracy, per-class accuracy and the confusion matrix of an exported model on labelled data.

Runs through the torch-free runtime, so it works in the runtime-only install (on the bundled sample or IDX files;
downloading MNIST needs torchvision, from the `train` extra).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cnnkit.data.datasets import Downloader, load_dataset, load_recorded
from cnnkit.data.imagefolder import FolderOptions
from cnnkit.errors import DataError
from cnnkit.runtime import Classifier
from cnnkit.runtime.classifier import strict_fallback


@dataclass(frozen=True, kw_only=True)
class ClassAccuracy:
    label: str
    images: int
    accuracy: float | None  # None for a class with no images


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    model: str
    model_version: str
    variant: str
    providers: list[str]
    dataset: str
    split: str
    images: int
    accuracy: float
    per_class: list[ClassAccuracy]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    seconds: float
    engine: str = "onnxruntime"
    precision: str = "fp32"  # the float precision the engine computed in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    model: str | os.PathLike[str],
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    split: str = "test",
    batch: int = 512,
    engine: Any = "auto",
) -> EvalResult:
    """Classify every image of `split` ("test" or "train"); the model's own recorded dataset by default."""
    clf = Classifier(model, device=device, engine=engine, fallback=strict_fallback(device), max_batch=batch,
                     trust_int8=True)  # fmt: skip  # evaluate judges the file
    if dataset is None and data_dir is None:
        recorded = clf.info.raw.get("dataset")
        if not isinstance(recorded, dict):
            raise DataError(f"{clf.source}: the model records no dataset; pass --dataset or --data-dir")
        ds = load_recorded(recorded)
    else:
        folder = FolderOptions.for_geometry(clf.info.geometry)  # an image folder is decoded as the model takes it
        ds = load_dataset(dataset, data_dir, download=_downloader(), folder=folder).dataset
        if ds.record.get("kind") == "image-folder" and ds.classes != clf.classes:
            raise DataError(f"{ds.source}: its classes {list(ds.classes)[:5]} are not the model's {clf.classes[:5]}")
    images, labels = (ds.test_images, ds.test_labels) if split == "test" else (ds.train_images, ds.train_labels)
    n_classes = clf.info.num_classes
    if len(labels) == 0:
        raise DataError(f"{ds.source}: the {split} split has no images")
    if int(labels.max()) >= n_classes:
        raise DataError(f"{ds.source}: label {int(labels.max())} but the model knows {n_classes} classes")
    t0 = time.perf_counter()
    predicted = clf.logits(images).argmax(1)  # the Classifier runs it in chunks of `batch` (its max_batch)
    seconds = time.perf_counter() - t0
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = [
        ClassAccuracy(
            label=clf.classes[k],
            images=int(confusion[k].sum()),
            accuracy=float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None,
        )
        for k in range(n_classes)
    ]
    return EvalResult(
        model=str(model),
        model_version=clf.info.version,
        variant=clf.info.variant,
        providers=clf.providers,
        engine=clf.engine,
        precision=clf.precision,
        dataset=ds.name,
        split=split,
        images=len(labels),
        accuracy=float(np.trace(confusion) / len(labels)),
        per_class=per_class,
        confusion=confusion.tolist(),
        seconds=seconds,
    )


def _downloader() -> Downloader | None:
    """torchvision's downloads (the `train` extra; none where $CNNKIT_OFFLINE is set)."""
    from cnnkit.train.download import downloader

    return downloader()
