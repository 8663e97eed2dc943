"""The training recipe on two real datasets: the fixed default against the recipe chosen on validation (auto).

For each dataset and seed: `cnnkit train --recipe default` (the fixed default recipe) and `cnnkit train` (the
default, `--recipe auto`: trials on the validation split choose the recipe, which then trains in full), both with
the default epoch budget and early stopping. Reported: test accuracy (the test split is never used to choose),
validation accuracy, the epochs run and the one kept, the chosen settings with every trial's validation score, and
the wall time (trials included). Datasets: the bundled MNIST sample (4,000 training / 1,000 test digits) and
Fashion-MNIST (60,000 / 10,000 clothing images, not digits) from Debian's `dataset-fashion-mnist`, which
benchmarks/recipe.sh installs. Writes benchmarks/results/recipe_cpu.json.

    bash benchmarks/recipe.sh [--datasets sample,fashion-mnist] [--seeds 0,1,2] [--modes default,auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace

from _common import machine, save

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def load(name: str):
    from cnnkit.data.datasets import load_idx_dir, load_sample

    if name == "sample":
        return load_sample()
    from pathlib import Path

    return load_idx_dir(Path(FASHION_DIR), "fashion-mnist")


def one_run(dataset, mode: str, seed: int) -> dict:
    """One training run as the CLI makes it (the same functions, in this process), timed end to end."""
    from cnnkit.train import tune
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.run import train

    cfg = TrainConfig(seed=seed, device="cpu")
    t0 = time.perf_counter()
    tuning = None
    if mode == "auto":
        tuning = tune.choose(dataset, cfg, {}, report=lambda line: print("   ", line, flush=True))
        cfg = replace(cfg, **tuning.settings)
    with tempfile.TemporaryDirectory() as out:
        r = train(dataset, cfg, out, progress=False, tuning=tuning.to_dict() if tuning else None)
    row = {
        "seed": seed,
        "test_accuracy": r.test_accuracy,
        "val_accuracy": r.val_accuracy,
        "epochs_run": len(r.epochs),
        "epoch_budget": cfg.sized(len(dataset.train_labels)).n_epochs,
        "best_epoch": r.best_epoch,
        "stopped_early": r.stopped_early,
        "settings": {k: getattr(cfg, k) for k in tune.TUNED},
        "chosen": tuning.chosen if tuning else None,
        "trials": {t.name: round(t.val_accuracy, 4) for t in tuning.trials} if tuning else None,
        "trial_epochs": tuning.trials[0].epochs if tuning else None,
        "trials_s": round(tuning.seconds, 1) if tuning else 0.0,
        "train_images_per_s": round(r.images_per_s),
        "wall_s": round(time.perf_counter() - t0, 1),
        "precision": r.precision,
    }
    print(row, flush=True)
    return row


def summary(rows: list[dict]) -> dict:
    return {
        "median_test_accuracy": statistics.median(r["test_accuracy"] for r in rows),
        "median_val_accuracy": statistics.median(r["val_accuracy"] for r in rows),
        "median_wall_s": statistics.median(r["wall_s"] for r in rows),
        "chosen": sorted({r["chosen"] for r in rows if r["chosen"]}),
        "runs": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="sample,fashion-mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--modes", default="default,auto")
    ap.add_argument("--out", default="recipe_cpu.json")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    result: dict = {"machine": machine(), "command": "bash benchmarks/recipe.sh " + " ".join(sys.argv[1:])}
    for name in a.datasets.split(","):
        ds = load(name)
        entry: dict = {"train_images": len(ds.train_labels), "test_images": len(ds.test_labels)}
        for mode in a.modes.split(","):
            print(f"{name}, recipe {mode}", flush=True)
            entry[mode] = summary([one_run(ds, mode, seed) for seed in seeds])
        result[name] = entry
    result["validation"] = "a fixed 10% of the training images held out, the same for every seed and mode"
    save(a.out, result)


if __name__ == "__main__":
    main()
