"""train_state.json's schema, property-tested: any one field replaced by any JSON value either parses into a state
the loop can trust or is refused naming a field."""

import copy

from hypothesis import given
from hypothesis import strategies as st
from test_properties import SETTINGS, json_values

from cnnkit.spec import ModelConfig
from cnnkit.train import state_schema
from cnnkit.train.config import TrainConfig

EPOCH = {
    "epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.85, "test_loss": 0.4,
    "test_accuracy": 0.86, "seconds": 1.0, "images_per_s": 100.0,
}  # fmt: skip
VALID = {
    "format": state_schema.FORMAT,
    "epoch": 1,
    "step": 8,
    "recipe": TrainConfig().recipe("fp32"),
    "dataset_sha256": "a" * 64,
    "model": ModelConfig().to_dict(),
    "classes": list("0123456789"),
    "scheduler": {"last_epoch": 8, "_step_count": 9, "_schedule_phases": [{"end_step": 2.0, "start_lr": "initial_lr"}]},
    "param_groups": [{"params": list(range(8)), "lr": 1e-3, "weight_decay": 1e-4, "eps": 1e-8, "betas": [0.9, 0.999]}],
    "history": [EPOCH],
    "weights_sha256": "b" * 64,
    "world_size": 1,
    "best_epoch": 1,
}
FIELDS = [*VALID, "recipe.shift", "recipe.lr", "recipe.precision", "history.0.epoch", "history.0.val_loss",
          "param_groups.0.betas", "param_groups.0.params", "model.hidden", "scheduler.last_epoch"]  # fmt: skip


def test_the_valid_state_parses():
    state = state_schema.parse(copy.deepcopy(VALID))
    assert (state.epoch, state.step, len(state.history), state.best_epoch) == (1, 8, 1, 1)


def test_a_best_epoch_that_is_not_the_best_on_validation_is_refused():
    doc = copy.deepcopy(VALID)
    doc["epoch"], doc["history"] = 2, [EPOCH, {**EPOCH, "epoch": 2, "val_accuracy": 0.8}]
    state_schema.parse(copy.deepcopy(doc))  # best_epoch 1: the better validation accuracy
    doc["best_epoch"] = 2
    try:
        state_schema.parse(doc)
    except state_schema.SchemaError as exc:
        assert "best_epoch 2 is not the best epoch on validation" in str(exc)
    else:
        raise AssertionError("a checkpoint epoch that is not the best was accepted")


def test_a_state_from_the_previous_format_is_refused_saying_so():
    try:
        state_schema.parse({**VALID, "format": "cnnkit-train-state/1"})
    except state_schema.SchemaError as exc:
        assert "older cnnkit" in str(exc)
    else:
        raise AssertionError("an old-format state was accepted")


@SETTINGS
@given(st.sampled_from(FIELDS), json_values)
def test_any_field_changed_parses_to_a_sane_state_or_names_what_is_wrong(path, value):
    doc = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    try:
        state = state_schema.parse(doc)
    except state_schema.SchemaError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(state.epoch, int) and 1 <= state.epoch <= 10_000 and len(state.history) == state.epoch
    assert isinstance(state.step, int) and 1 <= state.step <= state_schema.MAX_STEPS
    TrainConfig(**{k: state.recipe[k] for k in TrainConfig().recipe("fp32") if k != "precision"})  # within bounds
    assert state.scheduler.get("last_epoch", state.step) == state.step
