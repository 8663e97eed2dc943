import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from cnnkit.cli import main
from cnnkit.data.datasets import load_sample


def test_predict_png_jpeg_pgm_and_bad_file(exported, tmp_path):
    ds = load_sample()
    idx = [int(np.flatnonzero(ds.test_labels == d)[0]) for d in (1, 3, 7)]
    files = []
    for n, i in enumerate(idx):
        img = ds.test_images[i, 0]
        if n == 0:
            p = tmp_path / "light_on_dark.png"
            Image.fromarray(img).save(p)
        elif n == 1:
            p = tmp_path / "scan.jpg"  # dark on light, larger: must be inverted and resized
            Image.fromarray(255 - img).resize((112, 112), Image.Resampling.NEAREST).save(p, quality=95)
        else:
            p = tmp_path / "digit.pgm"
            Image.fromarray(img).save(p)
        files.append(p)
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    r = CliRunner().invoke(
        main,
        [
            "predict",
            exported.artefacts["onnx"],
            *map(str, files),
            str(junk),
            "--device",
            "cpu",
            "--top-k",
            "2",
            "--json",
        ],
    )
    assert r.exit_code == 1  # one file failed
    out = json.loads(r.stdout)
    res = out["results"]
    assert out["failed"] == 1 and res[3]["error"] and "notes.png" in res[3]["error"]
    assert [x["inverted"] for x in res[:3]] == [False, True, False]
    assert [x["label"] for x in res[:3]] == [str(ds.test_labels[i]) for i in idx]
    assert len(res[0]["top_k"]) == 2


def test_predict_all_good_exit_zero(exported, tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(p)
    r = CliRunner().invoke(main, ["predict", exported.artefacts["onnx"], str(p), "--device", "cpu"])
    assert r.exit_code == 0 and "CPUExecutionProvider" in r.stdout


def test_predict_missing_model(tmp_path):
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "m.onnx"), "x.png"])
    assert r.exit_code == 1 and r.stderr.startswith("Error:") and "m.onnx" in r.stderr


def test_doctor_json():
    r = CliRunner().invoke(main, ["doctor", "--json"])
    out = json.loads(r.stdout)
    assert out["onnxruntime"]["version"] and "CPUExecutionProvider" in out["onnxruntime"]["available_providers"]
    from cnnkit.runtime import gpu_visible

    if not gpu_visible():  # a CPU machine is healthy, and doctor says why no CUDA session runs
        assert r.exit_code == 0 and out["ok"] and not out["cuda_session"]["ok"]
        assert any("no NVIDIA GPU visible" in p for p in out["problems"])
    else:  # a GPU machine is healthy only when ONNX Runtime really ran the probe on CUDA
        ran_on_cuda = "CUDAExecutionProvider" in out["cuda_session"]["providers"]
        assert r.exit_code == (0 if ran_on_cuda else 1) and (out["fix"] is None) == ran_on_cuda


def _one_error_line(r) -> str:
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_device_cuda_without_a_gpu_is_the_same_error_in_every_command(exported, tmp_path):
    import pytest

    from cnnkit.runtime import gpu_visible

    if gpu_visible():
        pytest.skip("checks the machine without a GPU")
    onnx = exported.artefacts["onnx"]
    img = tmp_path / "d.png"
    Image.fromarray(load_sample().test_images[0, 0]).save(img)
    for args in (
        ["predict", onnx, str(img), "--device", "cuda"],
        ["evaluate", onnx, "--device", "cuda"],
        ["serve", onnx, "--device", "cuda", "--port", "0"],
        ["bench", onnx, "--backends", "onnx", "--device", "cuda"],
    ):
        line = _one_error_line(CliRunner().invoke(main, args))
        assert "GPU" in line and "install" not in line.split("Fix:")[-1].lower(), (args, line)  # no wrong advice


def test_files_of_the_wrong_kind_are_named_for_what_they_are(exported, tmp_path):
    ts, onnx = exported.artefacts["torchscript"], exported.artefacts["onnx"]
    line = _one_error_line(CliRunner().invoke(main, ["predict", ts, onnx]))
    assert "zip archive (a TorchScript .ts" in line
    line = _one_error_line(CliRunner().invoke(main, ["export", onnx]))
    assert "an exported model (ONNX); expected a run folder or its model.safetensors" in line
    line = _one_error_line(CliRunner().invoke(main, ["doctor", str(tmp_path / "missing.onnx")]))
    assert "missing.onnx: ONNX model not found" in line


def test_a_port_in_use_is_one_line(exported):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        line = _one_error_line(CliRunner().invoke(main, ["serve", exported.artefacts["onnx"], "--port", str(port)]))
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in line and "in use" in line
