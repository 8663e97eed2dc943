"""Class names, precision choice, progress outside a terminal, curves, and torchrun/DDP training."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cnnkit.cli import main
from cnnkit.data.datasets import load_idx_dir
from cnnkit.errors import DataError
from cnnkit.train import checkpoint
from cnnkit.train.device import choose_precision
from cnnkit.train.distributed import World, shard_positions, steps_per_epoch
from helpers import write_idx_dataset


def test_class_names_from_option_and_classes_txt(tmp_path):
    data = write_idx_dataset(tmp_path / "idx", n_train=64, n_test=32)
    names = [f"c{i}" for i in range(10)]
    (data / "classes.txt").write_text("\n".join(names) + "\n")
    assert load_idx_dir(data, "idx").classes == tuple(names)

    run = tmp_path / "run"
    given = "zero,one,two,three,four,five,six,seven,eight,nine"
    args = ["train", "--data-dir", str(data), "--max-steps", "1", "--device", "cpu", "--out", str(run)]
    r = CliRunner().invoke(main, [*args, "--classes", given])
    assert r.exit_code == 0, r.output
    assert checkpoint.load(run).meta.classes == tuple(given.split(","))

    for bad, why in (("a,b,c", "names 3 classes"), ("a,\x1b[2J,c", "control characters"), ("a,a", "repeat")):
        r = CliRunner().invoke(main, [*args, "--force", "--classes", bad])
        assert r.exit_code == 1 and why in r.stderr, r.output
    (data / "classes.txt").write_text("only\nthree\nnames\n")
    with pytest.raises(DataError, match="out of range for 3 class names"):
        load_idx_dir(data, "idx")


def test_precision_auto_is_bf16_only_on_native_hardware(monkeypatch):
    cpu = torch.device("cpu")
    caps = dict(torch.cpu.get_capabilities())
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**caps, "amx_bf16": False, "avx512_bf16": False})
    assert choose_precision("auto", cpu) == ("fp32", "auto: CPU without bf16 units; fp32")
    assert choose_precision("fp32", cpu) == ("fp32", "requested")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**caps, "amx_bf16": True})
    assert choose_precision("auto", cpu)[0] == "bf16"


def test_precision_auto_on_cuda_is_measured_once_per_gpu_model(monkeypatch):
    """On a GPU, bf16 must be measured faster (by 10%) than fp32; the figures are cached per GPU model and torch."""
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake H200")
    calls = []

    def measure(precision):
        calls.append(precision)
        return {"fp32": 1000.0, "bf16": 950.0}[precision]  # host-bound: bf16's casts only cost

    chosen, why = choose_precision("auto", gpu, measure)
    assert chosen == "fp32" and "bf16 950 vs fp32 1,000" in why and calls == ["fp32", "bf16"]
    assert choose_precision("auto", gpu, lambda p: 1 / 0)[0] == "fp32"  # cached: not measured again
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake B200")
    assert choose_precision("auto", gpu, lambda p: {"fp32": 1000.0, "bf16": 2000.0}[p])[0] == "bf16"


def test_shards_are_disjoint_and_cover_each_batch():
    n, batch = 1001, 128
    for size in (1, 2, 3):
        shares = [shard_positions(n, batch, World(rank=r, local_rank=r, size=size)) for r in range(size)]
        got = torch.cat([p for p, _ in shares]).sort().values
        steps = steps_per_epoch(n, batch, size)
        assert torch.equal(got, torch.arange(min(n, steps * batch)))
        assert all(len(sizes) == steps for _, sizes in shares)  # every rank takes the same number of steps
        assert [sum(s[i] for _, s in shares) for i in range(steps - 1)] == [batch] * (steps - 1)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, trained):
    """`--nproc 2` (torchrun, gloo) on the bundled sample lands within 0.5 points of the one-process run."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "cnnkit", "train", "--nproc", "2", "--dataset", "sample", "--epochs", "1"]
    cmd += ["--batch-size", "128", "--shift", "0", "--rotate", "0", "--device", "cpu", "--out", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ck = checkpoint.load(run)
    assert json.loads((run / "checkpoint.json").read_text())["world_size"] == 2
    one, two = trained.test_accuracy, ck.meta.metrics["test_accuracy"]
    assert abs(one - two) <= 0.005, (one, two)
    # progress outside a terminal: whole lines, no carriage-return bar updates; one report, from rank 0
    assert "\r" not in proc.stderr and proc.stderr.count("Training on mnist-sample") == 1
    assert proc.stdout.count("test accuracy") == 1
    assert checkpoint.build_model(ck)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)  # the usual format


@pytest.mark.slow
def test_torchrun_with_one_process_trains_in_a_process_group(tmp_path):
    """`--nproc 1`: torchrun's one process still joins a process group (gloo here, NCCL on a GPU) and runs DDP."""
    run = tmp_path / "one"
    cmd = [sys.executable, "-m", "cnnkit", "train", "--nproc", "1", "--dataset", "sample", "--recipe", "default"]
    cmd += ["--epochs", "1", "--max-steps", "5", "--device", "cpu", "--out", str(run), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["process_group"] == "gloo" and result["world_size"] == 1 and result["cuda_graph"] is False
    assert json.loads((run / "checkpoint.json").read_text())["world_size"] == 1


def test_torchrun_environment_is_a_process_group_even_for_one_process(monkeypatch):
    from cnnkit.train.distributed import from_env

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not from_env().distributed
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    world = from_env()
    assert world.distributed and world.size == 1 and world.is_main


def test_curves_png(trained):
    path = checkpoint.resolve(trained.out_dir).parent / "curves.png"
    assert trained.curves == str(path) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_numpy_writable_warning(tmp_path, recwarn):
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.run import train

    ds = load_idx_dir(write_idx_dataset(tmp_path / "idx", n_train=64, n_test=32), "idx")
    assert not ds.train_images.flags.writeable  # IDX files are read into read-only memory
    train(ds, TrainConfig(max_steps=1, device="cpu"), tmp_path / "run", False)
    assert not [w for w in recwarn if "not writable" in str(w.message)]
    assert np.asarray(ds.train_images).flags.writeable is False
