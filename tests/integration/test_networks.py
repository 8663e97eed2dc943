"""Other networks through the same path: the user's own module by its import path (trained, exported, verified,
benchmarked; the code imported only when named on the command line), torchvision's builders adapted to the input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnkit.errors import CheckpointError
from cnnkit.spec import ModelConfig
from cnnkit.train import nets
from helpers import cli as cnnkit
from helpers import photos

TESTS = str(Path(__file__).resolve().parents[1])
ARCH = "usernets.tiny:build"


def fresh(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a process of its own: nothing trusted by an earlier command (`nets.trust` is per process)."""
    env = {**os.environ, "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_a_users_module_trains_exports_and_verifies_and_runs_only_when_named(tmp_path):
    photos(tmp_path / "colours", n=8)
    r = cnnkit("train", "--data-dir", "colours", "--arch", ARCH, "--out", "run", "--epochs", "1", "--recipe",
               "default", "--image-size", "16", cwd=tmp_path)  # fmt: skip  # named here: trusted in this process
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["config"]["arch"] == ARCH and meta["train_args"]["arch"] == ARCH

    refused = fresh("export", "run", "--format", "onnx", cwd=tmp_path)
    assert refused.returncode == 1 and f"pass --arch {ARCH} to run it" in refused.stderr
    assert refused.stderr.count("\n") == 1 and not (tmp_path / "run" / "model.onnx").exists()

    r = cnnkit("export", "run", "--format", "all", "--arch", ARCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cnnkit("verify", "run/model.onnx", "run/model.ts", "run/model.pt2", "--arch", ARCH, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    backends = json.loads(r.stdout)["backends"]
    assert [b["backend"] for b in backends] == ["onnx", "torchscript", "exported"] and all(
        b["passed"] for b in backends
    )
    info = json.loads(cnnkit("predict", "run/model.onnx", "colours/red/1.png", "--json", cwd=tmp_path).stdout)
    assert info["results"][0]["label"] in ("blue", "green", "red")


def test_a_user_module_that_does_not_fit_the_input_is_one_line(tmp_path):
    photos(tmp_path / "colours", n=4)
    r = fresh("train", "--data-dir", "colours", "--arch", "usernets.tiny:broken", "--out", "run", cwd=tmp_path)
    assert r.returncode == 1 and "the module fails on a 1x3x32x32 input" in r.stderr and "Traceback" not in r.stderr
    r = cnnkit("train", "--data-dir", "colours", "--arch", "usernets.nothere:build", "--out", "run", cwd=tmp_path)
    assert r.returncode == 1 and "cannot import usernets.nothere" in r.stderr


def test_a_construct_one_format_cannot_take_fails_that_format_in_one_line_and_the_others_still_export(tmp_path):
    photos(tmp_path / "colours", n=4)
    arch = "usernets.tiny:branchy"  # data-dependent control flow: TorchScript scripts it, torch.export refuses it
    r = cnnkit("train", "--data-dir", "colours", "--arch", arch, "--out", "run", "--max-steps", "1", "--recipe",
              "default", "--image-size", "16", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cnnkit("export", "run", "--format", "all", "--arch", arch, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2 and "FAILED onnx: ONNX export failed: Could not guard on data-dependent" in failed[0]
    assert failed[1].startswith("FAILED exported: torch.export failed: Could not guard on data-dependent")
    assert "wrote torchscript: run/model.ts" in r.stdout and "parity: PASS" in r.stdout
    run = tmp_path / "run"
    assert not (run / "model.onnx").exists() and not (run / "model.pt2").exists() and not list(run.glob(".staging*"))
    assert set(json.loads((run / "exports.json").read_text())["files"]) == {"model.ts"}
    alone = cnnkit("export", "run", "--format", "onnx", "--arch", arch, cwd=tmp_path)
    assert alone.returncode == 1 and "\nError: ONNX export failed: Could not guard" in alone.stderr


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_builders_take_one_channel_and_small_inputs(arch):
    config = ModelConfig(arch=arch, in_channels=1, num_classes=5, image_size=16)
    model = nets.build(config).eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1 and first.stride == (1, 1)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 5)
    # MobileNetV3's ImageNet momentum (0.01) left its running statistics at chance after a short run: raised
    assert all(m.momentum >= 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_unknown_names_and_untrusted_paths_are_refused():
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9'.*did you mean"):
        nets.build(ModelConfig(arch="resnet9", in_channels=3, image_size=32))
    with pytest.raises(CheckpointError, match="pass --arch os.path:join"):
        nets.build(ModelConfig(arch="os.path:join", in_channels=3, image_size=32))
    with pytest.raises(CheckpointError, match="neither a name"):
        ModelConfig.from_dict({"arch": "../../etc/passwd"})


@pytest.mark.slow
def test_an_aotinductor_package_compiles_verifies_and_refuses_another_cpus_build(tmp_path, monkeypatch):
    photos(tmp_path / "colours", n=4)
    r = cnnkit("train", "--data-dir", "colours", "--out", "run", "--max-steps", "1", "--recipe", "default",
               cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cnnkit("export", "run", "--format", "aoti", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cnnkit("verify", "run/model.aoti.pt2", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["backends"][0]["backend"] == "aoti", r.stdout + r.stderr

    from cnnkit.errors import ModelFileError
    from cnnkit.export import torch_formats

    info, record = torch_formats.metadata(tmp_path / "run" / "model.aoti.pt2")
    assert info.classes == ("blue", "green", "red") and record["AOTI_DEVICE_KEY"] == "cpu"
    monkeypatch.setattr("cnnkit.runtime.cpu.cpu_flags", lambda: [])
    with pytest.raises(ModelFileError, match="compiled for .* CPUs; this CPU lacks"):
        torch_formats.check_package(tmp_path / "m", {**record, "AOTI_CPU_ISA": "AVX2"}, torch.device("cpu"))
