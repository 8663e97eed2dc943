"""The house rules a user relies on: what each install can run, one-line errors, a model of another size."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cnnkit.cli import main
from helpers import write_idx_dataset

# Run cnnkit's CLI in a fresh process where the named packages cannot be imported (as in an install without them).
WITHOUT = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None  # 'import name' now raises ModuleNotFoundError\n"
    "from cnnkit.cli import main\n"
    "main(sys.argv[2:], prog_name='cnnkit')\n"
)


def run_without(packages: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, packages, *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", [["train", "--dataset", "sample"], ["export", "x"], ["verify", "x.onnx"]])
def test_torch_side_without_torch_names_the_extra(command):
    r = run_without("torch,torchvision", *command)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"Error: cnnkit {command[0]} needs the 'train' extra (torch is not installed): pip install 'cnnkit[train]'"
    ]


def test_serve_without_the_serve_extra_names_it(exported):
    r = run_without("starlette,uvicorn", "serve", exported.artefacts["onnx"], "--port", "0")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "needs the 'serve' extra (starlette is not installed): pip install 'cnnkit[serve]'" in r.stderr


def test_runtime_commands_run_without_torch_or_onnx(exported, tmp_path):
    from PIL import Image

    from cnnkit.data.datasets import load_sample

    png = tmp_path / "d.png"
    Image.fromarray(load_sample().test_images[0, 0]).save(png)
    blocked = "torch,torchvision,onnx,onnxscript,safetensors"
    r = run_without(blocked, "predict", exported.artefacts["onnx"], str(png), "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["label"] in "0123456789"
    r = run_without(blocked, "doctor", "--json")
    assert json.loads(r.stdout)["torch"]["version"] is None
    r = run_without(
        blocked,
        "bench",
        exported.artefacts["onnx"],
        "--backends",
        "onnx",
        "--batch-sizes",
        "1,3",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--json",
        "-",
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [(x["backend"], x["batch_size"]) for x in rows] == [("onnx", 1), ("onnx", 3)]
    assert all(x["images_per_s"] > 0 for x in rows)
    r = run_without(blocked, "bench", exported.artefacts["onnx"], "--backends", "eager")
    assert r.returncode == 1 and "pip install 'cnnkit[train]'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_bench_a_32x32_model_from_its_checkpoint_alone(tmp_path):
    """Bench exports on the fly through the one export function, which takes the input size from the checkpoint."""
    data = write_idx_dataset(tmp_path / "idx32", n_train=64, n_test=16, size=32)
    run = tmp_path / "run32"
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--data-dir",
            str(data),
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--device",
            "cpu",
            "--out",
            str(run),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main,
        [
            "bench",
            str(run / "model.safetensors"),
            "--backends",
            "eager,torchscript,onnx",
            "--batch-sizes",
            "2",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--json",
            "-",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {x["backend"] for x in out["rows"]} == {"eager", "torchscript", "onnx"}
    assert all(x["error"] is None and x["images_per_s"] > 0 for x in out["rows"])
    assert any("onnx exported from the checkpoint" in n for n in out["notes"])
