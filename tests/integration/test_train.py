import json

import pytest
import torch
from safetensors.torch import load_file

from cnnkit import atomic
from cnnkit.data.datasets import load_idx_dir
from cnnkit.errors import CheckpointError
from cnnkit.train import checkpoint
from cnnkit.train.config import TrainConfig
from cnnkit.train.run import train
from helpers import write_idx_dataset


def test_short_run_learns(trained):
    assert trained.test_accuracy > 0.8  # chance is 0.1
    assert len(trained.epochs) == 1 and not trained.interrupted
    ck = checkpoint.load(trained.checkpoint)
    assert ck.meta.classes == tuple("0123456789")
    assert 0.05 < ck.meta.mean[0] < 0.2 and 0.2 < ck.meta.std[0] < 0.4 and len(ck.meta.mean) == 1
    assert ck.meta.metrics["test_accuracy"] == trained.test_accuracy
    assert ck.meta.dataset["name"] == "mnist-sample"
    lines = (checkpoint.resolve(trained.out_dir).parent / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]


def test_seed_gives_identical_weights(tmp_path):
    ds = load_idx_dir(write_idx_dataset(tmp_path / "idx", n_train=640, n_test=32), "idx")
    cfg = TrainConfig(epochs=1, max_steps=4, seed=7, device="cpu")
    a = train(ds, cfg, tmp_path / "a", progress=False)
    b = train(ds, cfg, tmp_path / "b", progress=False)
    wa, wb = load_file(a.checkpoint), load_file(b.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(ds, TrainConfig(epochs=1, max_steps=4, seed=8, device="cpu"), tmp_path / "c", progress=False)
    assert not torch.equal(wa["fc2.weight"], load_file(c.checkpoint)["fc2.weight"])


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")

    def failing_writer(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.write_with(target, failing_writer)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(bad)
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing")
