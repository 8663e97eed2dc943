"""`--recipe auto`'s rules: which candidates, how long a trial, when it does not tune, the default epoch budget."""

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.train import tune
from cnnkit.train.config import TrainConfig, best_epoch, default_epochs, patience_ran_out


def test_options_given_explicitly_are_held_and_duplicates_dropped():
    held = tune.candidates({"shift": 0, "rotate": 0.0, "flip": False, "lr": 0.01})  # lr is not tuned: ignored
    assert all(c["shift"] == 0 and c["rotate"] == 0 and c["flip"] is False for c in held.values())
    # with shifts, rotation and flips held, only label smoothing tells 'default' apart: 'shifts'/'mirror' = 'none'
    assert list(held) == ["default", "shifts"]
    assert held["shifts"]["label_smoothing"] == 0 and held["default"]["label_smoothing"] == 0.1
    assert tune.candidates({}) == tune.CANDIDATES


def test_auto_says_why_it_does_not_tune():
    cfg = TrainConfig()
    assert tune.why_not(cfg, {}, world_size=1) is None
    assert "--val-fraction 0" in tune.why_not(TrainConfig(val_fraction=0), {}, 1)
    assert "--max-steps" in tune.why_not(TrainConfig(max_steps=5), {}, 1)
    assert "torchrun" in tune.why_not(cfg, {}, 2)
    every = {k: v for k, v in tune.CANDIDATES["none"].items()}
    assert "explicitly" in tune.why_not(cfg, every, 1)


@pytest.mark.parametrize(
    ("epochs", "n_fit", "trial"),
    [(20, 4_500, 5), (10, 54_000, 1), (20, 20_000, 2), (1, 100, 1), (3, 100, 1), (40, 1_000, 10)],
)
def test_a_trial_is_a_quarter_of_the_run_and_about_30k_images_at_most(epochs, n_fit, trial):
    assert tune.trial_epochs(epochs, n_fit) == trial


@pytest.mark.parametrize(("n_fit", "epochs"), [(4_500, 20), (27_000, 20), (54_000, 10), (540_000, 1), (10, 20)])
def test_the_default_epochs_shrink_on_large_data(n_fit, epochs):
    assert default_epochs(n_fit) == epochs


def test_a_config_is_sized_to_its_data_unless_epochs_are_given():
    assert TrainConfig().sized(60_000).epochs == 10  # 54,000 images after the 10% validation split
    assert TrainConfig().sized(5_000).epochs == 20
    assert TrainConfig(epochs=3).sized(60_000).epochs == 3
    with pytest.raises(RuntimeError):
        _ = TrainConfig().n_epochs
    with pytest.raises(CnnkitError, match="flip must be true or false"):
        TrainConfig(flip=1)


def test_settings_read_as_words():
    assert tune.describe(tune.CANDIDATES["mirror"]) == ("shift 0, rotate 0, flip on, label smoothing 0, dropout 0.5")


def test_the_kept_epoch_is_the_latest_within_a_quarter_point_of_the_best_and_patience_counts_from_it():
    def history(*accuracies):
        return [{"epoch": i + 1, "val_accuracy": a} for i, a in enumerate(accuracies)]

    assert best_epoch(history(0.99, 0.995, 0.9925, 0.99)) == 3  # one image of 400 below the best: later kept
    assert best_epoch(history(0.90, 0.95, 0.94, 0.93)) == 2
    assert best_epoch([{"epoch": 1, "val_accuracy": None}]) is None
    assert patience_ran_out(history(0.90, 0.95, 0.94, 0.93), 2)
    assert not patience_ran_out(history(0.90, 0.95, 0.94), 2) and not patience_ran_out(history(0.9, 0.8, 0.7), 0)
