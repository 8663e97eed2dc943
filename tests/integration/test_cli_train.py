import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from cnnkit.cli import main


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys; from click.testing import CliRunner; from cnnkit.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(main, ['--version']); assert '0.' in r.output; "
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'torchvision') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_json(tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "sample",
            "--max-steps",
            "3",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["checkpoint"].endswith("model.safetensors") and out["dataset"]["name"] == "mnist-sample"
    assert 0 <= out["test_accuracy"] <= 1 and out["device"] == "cpu"


def test_train_bad_data_dir(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"garbage!")
    r = CliRunner().invoke(main, ["train", "--data-dir", str(tmp_path), "--max-steps", "1"])
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: ") and "bad magic" in r.stderr and "Traceback" not in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_train_cuda_unavailable(tmp_path):
    r = CliRunner().invoke(main, ["train", "--dataset", "sample", "--device", "cuda", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "CUDA is not available" in r.stderr


def test_unwritable_out_is_a_clean_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(
        main, ["train", "--dataset", "sample", "--max-steps", "1", "--device", "cpu", "--out", str(blocker / "run")]
    )
    assert r.exit_code == 1 and "Error: [Errno 20] Not a directory" in r.stderr and "Traceback" not in r.output
    assert "epoch" not in r.stderr  # failed before training


def test_non_square_idx_rejected(tmp_path):
    import numpy as np

    from cnnkit.data.idx import write_idx

    rng = np.random.default_rng(0)
    for name, shape in (
        ("train-images-idx3-ubyte", (8, 28, 20)),
        ("train-labels-idx1-ubyte", (8,)),
        ("t10k-images-idx3-ubyte", (4, 28, 20)),
        ("t10k-labels-idx1-ubyte", (4,)),
    ):
        write_idx(tmp_path / name, rng.integers(0, 10, shape))
    r = CliRunner().invoke(
        main,
        ["train", "--data-dir", str(tmp_path), "--max-steps", "1", "--device", "cpu", "--out", str(tmp_path / "run")],
    )
    assert r.exit_code == 1 and "28x20" in r.stderr
