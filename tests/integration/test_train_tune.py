"""`--recipe auto`: chosen on validation only, recorded, printed, and kept by a resume."""

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from cnnkit.cli import main
from cnnkit.data.datasets import load_idx_dir, load_sample
from cnnkit.data.idx import write_idx
from cnnkit.train import run, tune
from cnnkit.train.config import TrainConfig
from helpers import StopAfter

CFG = TrainConfig(epochs=4, batch_size=64, device="cpu", precision="fp32")  # trials of 1 epoch


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """480 real digits of the bundled sample, drawn at random (432 to train on, 48 to validate), and 100 test
    digits, as IDX files."""
    ds = load_sample()
    rng = np.random.default_rng(0)
    train, test = rng.choice(len(ds.train_labels), 480, replace=False), rng.choice(len(ds.test_labels), 100, False)
    out = tmp_path_factory.mktemp("digits")
    for name, arr in {
        "train-images-idx3-ubyte": ds.train_images[train, 0],
        "train-labels-idx1-ubyte": ds.train_labels[train],
        "t10k-images-idx3-ubyte": ds.test_images[test, 0],
        "t10k-labels-idx1-ubyte": ds.test_labels[test],
    }.items():
        write_idx(out / name, arr)
    return out


def test_the_choice_never_reads_the_test_split(digits, monkeypatch):
    """Shuffled test labels and noise for test images: the same trials, the same scores, the same choice; and no
    trial is handed a single test image."""
    ds = load_idx_dir(digits, "idx")
    handed = []
    real_train = run.train

    def spy(dataset, *args, **kwargs):
        handed.append(len(dataset.test_labels) + dataset.test_images.size)
        return real_train(dataset, *args, **kwargs)

    monkeypatch.setattr(run, "train", spy)
    held = {"shift": 0, "rotate": 0.0}  # three candidates left: label smoothing or not, flips or not
    first = tune.choose(ds, CFG, held)
    rng = np.random.default_rng(1)
    garbled = replace(
        ds,
        test_labels=rng.permutation(ds.test_labels),
        test_images=rng.integers(0, 256, ds.test_images.shape, dtype=np.uint8),
    )
    second = tune.choose(garbled, CFG, held)
    assert handed == [0] * 2 * len(tune.candidates(held)) and len(first.trials) == 3
    assert first.chosen == second.chosen
    assert [(t.name, t.val_accuracy, t.val_loss) for t in first.trials] == [
        (t.name, t.val_accuracy, t.val_loss) for t in second.trials
    ]
    assert all(t.epochs == 1 for t in first.trials) and max(t.val_accuracy for t in first.trials) > 0.3


def test_auto_prints_its_cost_and_trials_records_them_and_a_resume_keeps_the_recipe(digits, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--data-dir", str(digits), "--epochs", "2", "--device", "cpu", "--out", str(run_dir)]
    r = CliRunner().invoke(main, [*args, "--shift", "0"])
    assert r.exit_code == 0, r.output
    assert "recipe auto: " in r.stderr and "trials of 1 epoch, then up to 2 epochs" in r.stderr
    assert "training images/s measured here" in r.stderr and "trial shifts (shift 0, rotate 0" in r.stderr
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    tuning, args_used = meta["tuning"], meta["train_args"]
    assert [t["name"] for t in tuning["trials"]] == list(tune.candidates({"shift": 0}))
    assert all(c["shift"] == 0 for c in tune.candidates({"shift": 0}).values())  # the flag given is held
    assert {k: args_used[k] for k in tune.TUNED} == tuning["settings"] and args_used["shift"] == 0
    best = max(tuning["trials"], key=lambda t: t["val_accuracy"])
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in tuning["trials"])
    said = f"recipe {tuning['chosen']!r} ({tune.describe(tuning['settings'])}), chosen on validation (trials: "
    assert said in r.stdout

    # the same chosen recipe, stopped after epoch 1 and resumed from the command line: no trials, same recipe
    chosen = replace(CFG, epochs=2, **tuning["settings"])
    stopped = run.train(load_idx_dir(digits, "idx"), chosen, tmp_path / "b", StopAfter(1), tuning=tuning)
    assert stopped.interrupted
    r = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "b"), "--data-dir", str(digits), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert "recipe auto" not in r.stderr and result["resumed_from_epoch"] == 1
    assert result["tuning"] == tuning and [e["epoch"] for e in result["epochs"]] == [1, 2]
    resumed_args = json.loads((tmp_path / "b" / "checkpoint.json").read_text())["train_args"]
    assert {k: resumed_args[k] for k in tune.TUNED} == tuning["settings"]


def test_recipe_default_trains_the_fixed_recipe_without_trials(digits, tmp_path):
    r = CliRunner().invoke(
        main,
        ["train", "--data-dir", str(digits), "--recipe", "default", "--epochs", "1", "--device", "cpu",
         "--out", str(tmp_path / "run"), "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "recipe auto" not in r.stderr and json.loads(r.stdout)["tuning"] is None
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["tuning"] == {} and meta["train_args"]["rotate"] == TrainConfig().rotate
