"""Write an MNIST-shaped IDX dataset of N training images (the bundled sample tiled, randomly shifted)
for throughput runs: `python benchmarks/make_synthetic_idx.py DIR [--train 60000]`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cnnkit.data.datasets import load_sample
from cnnkit.data.idx import FILES as IDX_FILES
from cnnkit.data.idx import write_idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=60000)
    a = ap.parse_args()
    ds = load_sample()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ds.train_labels), a.train)
    x = ds.train_images[idx, 0]
    shifts = rng.integers(-2, 3, (a.train, 2))
    x = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shifts)])
    a.out.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX_FILES, (x, ds.train_labels[idx], ds.test_images[:, 0], ds.test_labels)):
        write_idx(a.out / name, arr)
    print(f"wrote {a.train} training images to {a.out}")


if __name__ == "__main__":
    main()
