"""An RGB image-folder set built from the colour photos that ship inside scikit-image's wheel (`skimage.data`): each
class is one photo, its images are patches of it of random size (32-96 px, so the sizes are mixed) at random places,
saved as PNG or JPEG. Nothing is downloaded; run it with a Python that has scikit-image (benchmarks/image_folders.sh
makes one).

    python benchmarks/make_photo_patches.py OUT [--per-class 300] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle",
          "retina", "rocket")  # fmt: skip  # the RGB photos in the wheel itself (the others are fetched on demand)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import skimage.data

    rng = np.random.default_rng(a.seed)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = photo[0] if isinstance(photo, tuple) else photo  # stereo_motorcycle: (left, right, disparity)
        h, w = photo.shape[:2]
        folder = a.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(a.per_class):
            side = int(rng.integers(32, 97))
            y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            ph, pw = side, int(side * rng.uniform(0.75, 1.33))  # not all square either
            patch = photo[y : y + ph, x : min(w, x + pw), :3]
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(np.ascontiguousarray(patch)).save(folder / f"{i:04d}.{ext}", quality=90)
    print(f"wrote {len(PHOTOS)} classes x {a.per_class} patches to {a.out}")


if __name__ == "__main__":
    main()
