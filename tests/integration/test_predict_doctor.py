import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from cnnkit.cli import main
from cnnkit.datasets import load_sample


def test_predict_png_jpeg_pgm_and_bad_file(exported, tmp_path):
    ds = load_sample()
    idx = [int(np.flatnonzero(ds.test_labels == d)[0]) for d in (1, 3, 7)]
    files = []
    for n, i in enumerate(idx):
        img = ds.test_images[i]
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
