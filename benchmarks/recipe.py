"""The default training recipe on the bundled sample: 3 seeds, validation and test accuracy, against the old one.

Every run holds out the same fixed 10% of the training images (400) as the validation split; the recipe was
chosen on validation accuracy, and the 1,000 test images are reported, not tuned on. Writes
benchmarks/results/recipe_cpu.json.

    python benchmarks/recipe.py [--seeds 0,1,2] [--no-baseline]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict

from _common import machine, save

# the recipe before this one (8 epochs, batch 128, shifts only), for comparison on the same validation split
BASELINE = {"epochs": 8, "batch_size": 128, "rotate": 0.0, "label_smoothing": 0.0}


def runs(overrides: dict, seeds: list[int]) -> dict:
    from cnnkit.datasets import load_sample
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.run import train

    rows = []
    for seed in seeds:
        cfg = TrainConfig(seed=seed, device="cpu", **overrides)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            r = train(load_sample(), cfg, out, progress=False)
        row = {
            "seed": seed,
            "val_accuracy": r.val_accuracy,
            "test_accuracy": r.test_accuracy,
            "train_images_per_s": r.images_per_s,
            "seconds": time.perf_counter() - t0,
            "precision": r.precision,
            "precision_reason": r.precision_reason,
        }
        print(row, flush=True)
        rows.append(row)
    cfg = TrainConfig(**overrides)
    return {
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("seed", "device", "max_steps", "eval_batch_size")},
        "runs": rows,
        "median_val_accuracy": statistics.median(r["val_accuracy"] for r in rows),
        "median_test_accuracy": statistics.median(r["test_accuracy"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--no-baseline", action="store_true")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    result = {"machine": machine(), "command": "python benchmarks/recipe.py " + " ".join(sys.argv[1:])}
    result["default"] = runs({}, seeds)
    if not a.no_baseline:
        result["baseline"] = runs(BASELINE, seeds)
    result["validation"] = "400 training images held out (fixed choice, the same for every seed); test = 1,000"
    save("recipe_cpu.json", result)


if __name__ == "__main__":
    main()
