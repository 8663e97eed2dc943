"""A run that stops and picks up where it stopped; a run folder that is not silently overwritten; divergence."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from cnnkit.cli import main
from cnnkit.data.datasets import load_idx_dir
from cnnkit.errors import TrainingError
from cnnkit.train.config import TrainConfig
from cnnkit.train.run import train
from helpers import StopAfter, sigint_default, write_idx_dataset

ARGS = ["--recipe", "default", "--epochs", "3", "--batch-size", "64", "--device", "cpu", "--precision", "fp32"]


@pytest.mark.slow
def test_ctrl_c_then_resume_ends_with_the_same_weights(tmp_path):
    """A 3-epoch run, and the same run stopped by SIGINT after an epoch and resumed, end bitwise equal on CPU."""
    data = write_idx_dataset(tmp_path / "idx", n_train=384, n_test=64)
    ds = load_idx_dir(data, "idx")
    full = train(ds, TrainConfig(epochs=3, batch_size=64, device="cpu", precision="fp32"), tmp_path / "a", False)

    run = tmp_path / "b"
    cmd = [sys.executable, "-m", "cnnkit", "train", "--data-dir", str(data), *ARGS, "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=sigint_default)
    deadline = time.time() + 120
    while not (run / "train_state.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()[-1500:]
    assert b"interrupted: kept epoch" in out and not [p for p in run.iterdir() if p.name.startswith(".")]
    stopped_at = json.loads((run / "train_state.json").read_text())["epoch"]

    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["resumed_from_epoch"] == stopped_at and [e["epoch"] for e in result["epochs"]] == [1, 2, 3]
    a, b = load_file(full.checkpoint), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    # the same run asked for with another recipe or other data is refused, naming the difference
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--lr", "0.01"])
    assert r.exit_code == 1 and "Error: --lr 0.01: differs from the run's 0.002" in r.stderr
    other = write_idx_dataset(tmp_path / "other", n_train=384, n_test=64, seed=1)
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--data-dir", str(other)])
    assert r.exit_code == 1 and "not the data this model was trained on" in r.stderr
    r = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "a" / "nothing")])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.output


def test_out_folder_of_an_earlier_run_is_not_overwritten(tmp_path):
    data = write_idx_dataset(tmp_path / "idx", n_train=128, n_test=32)
    run = tmp_path / "run"
    base = ["train", "--data-dir", str(data), "--max-steps", "2", "--device", "cpu", "--out", str(run)]
    assert CliRunner().invoke(main, base).exit_code == 0
    (run / "model.onnx").write_bytes(b"an export of the old checkpoint")
    for stale in ("exports.json", "bench.json", "bench.png"):
        (run / stale).write_text("of the old run")
    (run / "notes.txt").write_text("mine")
    before = (run / "model.safetensors").read_bytes()
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 1 and "not empty" in r.stderr and "--force" in r.stderr
    assert (run / "model.safetensors").read_bytes() == before
    r = CliRunner().invoke(main, [*base, "--force", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert (run / "model.safetensors").read_bytes() != before
    assert not (run / "model.onnx").exists()  # a stale export would not match the new checkpoint
    assert not [f for f in ("exports.json", "bench.json", "bench.png") if (run / f).exists()]  # nor its records
    assert (run / "notes.txt").read_text() == "mine"  # not cnnkit's: left alone


def test_diverged_run_stops_with_one_line_and_keeps_nothing_broken(tmp_path):
    ds = load_idx_dir(write_idx_dataset(tmp_path / "idx", n_train=256, n_test=32), "idx")
    with pytest.raises(TrainingError, match="diverged in epoch 1 .loss .*a uniform guess scores 2.30.*nothing saved"):
        train(ds, TrainConfig(epochs=2, batch_size=64, lr=10, device="cpu"), tmp_path / "run", False)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    r = CliRunner().invoke(main, ["train", "--data-dir", str(tmp_path / "idx"), "--lr", "inf"])
    assert r.exit_code == 2 and "--lr" in r.stderr  # refused by the option's bounds before any work


def test_early_stopping_keeps_the_best_epoch_and_resumes_exactly(tmp_path):
    """Random labels: validation stops improving, the run ends `patience` epochs after its best one, the checkpoint
    holds the best epoch's weights, and a run stopped in between and resumed ends bitwise the same."""
    from cnnkit.train.config import best_epoch

    ds = load_idx_dir(write_idx_dataset(tmp_path / "idx", n_train=320, n_test=32), "idx")
    cfg = TrainConfig(epochs=12, batch_size=32, patience=2, val_fraction=0.2, device="cpu", precision="fp32")
    full = train(ds, cfg, tmp_path / "a", False)
    history = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    best = best_epoch(history)
    assert full.stopped_early and full.best_epoch == best and history[-1]["epoch"] == best + 2 < 12
    assert json.loads((tmp_path / "a" / "checkpoint.json").read_text())["metrics"]["epoch"] == best
    assert full.test_accuracy == history[best - 1]["test_accuracy"]
    ckpt, last = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "a" / "train_state.safetensors")
    assert not all(torch.equal(ckpt[k], last["model." + k]) for k in ckpt)  # the best, not the last, is deployed

    stopped = train(ds, cfg, tmp_path / "b", StopAfter(best + 1))  # after the best epoch, before the stop
    assert stopped.interrupted and stopped.best_epoch == best
    resumed = train(ds, cfg, tmp_path / "b", False, resume_run=True)
    assert resumed.resumed_from_epoch == best + 1 and resumed.stopped_early and resumed.best_epoch == best
    for name in ("model.safetensors", "train_state.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    again = train(ds, cfg, tmp_path / "b", False, resume_run=True)  # a run that stopped has nothing left to do
    assert again.epochs[-1].epoch == best + 2 and again.train_seconds == 0


def test_a_fine_tune_trains_body_and_head_at_their_rates_and_resumes_exactly(tmp_path):
    """`--weights`: two parameter groups (the body at body_lr_scale of lr), kept in the resume state; a fine-tune
    stopped after its first epoch and resumed ends bitwise the same as one that ran through."""
    from safetensors.torch import save_file

    from cnnkit.spec import ModelConfig
    from cnnkit.train import nets

    ds = load_idx_dir(write_idx_dataset(tmp_path / "idx", n_train=192, n_test=32), "idx")
    start = {k: v.contiguous() for k, v in nets.build(ModelConfig()).state_dict().items()}
    save_file(start, tmp_path / "start.safetensors")
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", precision="fp32", patience=0,
                      weights=str(tmp_path / "start.safetensors"), body_lr_scale=0.25)  # fmt: skip
    full = train(ds, cfg, tmp_path / "a", False)
    assert full.started_from["loaded"] == len(start) and not full.started_from["fresh"]
    groups = json.loads((tmp_path / "a" / "train_state.json").read_text())["param_groups"]
    assert [len(g["params"]) for g in groups] == [6, 2]  # the body, then fc2 (the head)
    assert groups[0]["initial_lr"] == pytest.approx(groups[1]["initial_lr"] * 0.25)
    stopped = train(ds, cfg, tmp_path / "b", StopAfter(1))
    assert stopped.interrupted
    resumed = train(ds, cfg, tmp_path / "b", False, resume_run=True)
    assert resumed.resumed_from_epoch == 1 and resumed.started_from is None
    for name in ("model.safetensors", "train_state.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
