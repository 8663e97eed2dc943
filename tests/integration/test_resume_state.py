"""A resume state someone edited (train_state.json, train_state.safetensors, the checkpoint's recipe) is refused in
one line naming the field, before any of it reaches the optimizer; a run that finishes at chance exits 1."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cnnkit.cli import main
from helpers import write_idx_dataset


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run (resuming it continues nothing, but every check still runs)."""
    root = tmp_path_factory.mktemp("resume")
    data = write_idx_dataset(root / "idx", n_train=128, n_test=32)
    run = root / "run"
    args = _fixed_recipe(data, epochs=2, batch_size=32)
    r = CliRunner().invoke(main, [*args, "--precision", "fp32", "--out", str(run), "--json"])
    assert r.exit_code == 0, r.output
    return run


def _fixed_recipe(data, epochs: int, batch_size: int) -> list[str]:
    """`cnnkit train` on `data` with the fixed recipe (no trials), on the CPU."""
    return ["train", "--data-dir", str(data), "--recipe", "default", "--epochs", str(epochs), "--batch-size",
            str(batch_size), "--device", "cpu"]  # fmt: skip


def _copy(run, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _edit_json(run, edit):
    path = run / "train_state.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


EDITS = {
    "string step": (lambda d: d.update(step="4"), "step must be an integer"),
    "huge step": (lambda d: d.update(step=10**18), "step must be an integer in 1..10000000000"),
    "negative epoch": (lambda d: d.update(epoch=-5), "epoch must be an integer"),
    "history keys": (lambda d: d["history"][0].update(surprise=1), "history[0] must hold exactly"),
    "no param groups": (lambda d: d.update(param_groups=[]), "param_groups must be a list"),
    "recipe shift": (lambda d: d["recipe"].update(shift=1000), "recipe shift must be an integer in 0..8"),
    "another step": (lambda d: (d.update(step=7), d["scheduler"].update(last_epoch=7)), "reaches step 8 after epoch 2"),
    "scheduler": (lambda d: d["scheduler"].update(last_epoch=3), "scheduler last_epoch 3 is not the step 8"),
    "scheduler text": (lambda d: d["scheduler"].update(base_lrs="x"), "scheduler.base_lrs is str, expected list"),
    "scheduler item": (lambda d: d["scheduler"].update(base_lrs=["x"]), "base_lrs[0] is str, expected number"),
    "scheduler keys": (lambda d: d["scheduler"].update(surprise=1), "scheduler has unknown keys ['surprise']"),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edited_train_state_json_is_one_line(finished, tmp_path, name):
    edit, match = EDITS[name]
    run = _copy(finished, tmp_path)
    _edit_json(run, edit)
    r = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and match in errors[0], r.stderr


def test_deep_json_and_wrong_tensors_are_one_line(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "train_state.json").write_text("[" * 100_000)
    r = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert r.exit_code == 1 and "corrupt training state" in r.stderr and "Traceback" not in r.output

    run = _copy(finished, tmp_path / "b")
    tensors = load_file(run / "train_state.safetensors")
    tensors["0.exp_avg"] = torch.zeros(3, 3)
    save_file(tensors, run / "train_state.safetensors", metadata={"epoch": "2"})
    r = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert r.exit_code == 1 and "0.exp_avg is torch.float32 [3, 3], the parameter is" in r.stderr, r.output


@pytest.mark.slow
def test_a_run_that_stays_at_chance_exits_1_and_keeps_its_checkpoint(tmp_path):
    """Random labels cannot be learnt: after 3 epochs and 100+ steps, validation is at chance, and the exit says so."""
    data = write_idx_dataset(tmp_path / "idx", n_train=1100, n_test=32)
    run = tmp_path / "run"
    args = _fixed_recipe(data, epochs=3, batch_size=16)
    r = CliRunner().invoke(main, [*args, "--shift", "0", "--rotate", "0", "--out", str(run)])
    assert r.exit_code == 1 and "the model did not learn: validation accuracy" in r.stderr, r.output
    assert (run / "model.safetensors").is_file()
    r = CliRunner().invoke(main, ["train", "--data-dir", str(data), "--lr", "10", "--max-steps", "20", "--force",
                                  "--out", str(run), "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 1 and "diverged in epoch 1" in r.stderr and "Traceback" not in r.output
