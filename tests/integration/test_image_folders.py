"""A user's own photos through every command, by the CLI itself: an RGB image folder of mixed sizes (PNG and JPEG)
trains with nothing but --data-dir, exports, verifies on its real test split (found again from the checkpoint's
record), and is served with the same labels `predict` gives; and the downloader is wired through
`cnnkit train`, not only through the library function."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import COLOURS, photos, start_server
from helpers import cli as cnnkit


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("photos")
    data = photos(work / "colours")
    r = cnnkit("train", "--data-dir", str(data), "--out", "run", "--epochs", "3", "--recipe", "default", cwd=work)
    assert r.returncode == 0, r.stderr
    return work, data, r.stderr


def test_an_rgb_folder_trains_with_nothing_but_data_dir_and_records_what_it_chose(rgb_run):
    work, data, said = rgb_run
    assert "to 32x32 RGB (shorter-crop)" in said and "grayscale images repeated in 3 channels" in said
    meta = json.loads((work / "run" / "checkpoint.json").read_text())
    assert meta["geometry"] == {"channels": 3, "height": 32, "width": 32, "resize": "shorter-crop", "invert": "never"}
    assert len(meta["mean"]) == len(meta["std"]) == 3 and meta["mean"][2] > meta["mean"][1]  # blue-heavy data
    assert meta["dataset"]["kind"] == "image-folder" and meta["dataset"]["name"] == "colours"
    assert meta["classes"] == sorted(COLOURS)


def test_export_verify_predict_and_serve_agree_on_the_users_photos(rgb_run):
    work, data, _ = rgb_run
    r = cnnkit("export", "run", "--format", "onnx", cwd=work)
    assert r.returncode == 0, r.stderr
    r = cnnkit("verify", "run/model.onnx", "--json", cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert any("colours test images" in c["case"] for b in report["backends"] for c in b["cases"])

    r = cnnkit("evaluate", "run/model.onnx", "--data-dir", str(data), "--json", cwd=work)
    assert r.returncode == 0, r.stderr
    evaluated = json.loads(r.stdout)
    assert evaluated["images"] == 15 and [c["label"] for c in evaluated["per_class"]] == sorted(COLOURS)

    import onnx

    props = {p.key: p.value for p in onnx.load(str(work / "run" / "model.onnx")).metadata_props}
    assert props["Image.BitmapPixelFormat"] == "Rgb8" and props["Image.NominalPixelRange"] == "NominalRange_0_255"

    files = [str(data / "red" / "1.png"), str(data / "green" / "2.jpg"), str(data / "blue" / "gray.png")]
    r = cnnkit("predict", "run/model.onnx", *files, "--json", cwd=work)
    assert r.returncode == 0, r.stderr
    predicted = [p["label"] for p in json.loads(r.stdout)["results"]]
    assert predicted[:2] == ["red", "green"] and not any(p["inverted"] for p in json.loads(r.stdout)["results"])

    proc, url = start_server(str(work / "run" / "model.onnx"))
    try:
        uploads = [("f", (Path(f).name, Path(f).read_bytes(), "application/octet-stream")) for f in files]
        served = httpx.post(url + "/v1/predict", files=uploads).json()["predictions"]
        assert [p["label"] for p in served] == predicted
        meta = httpx.get(url + "/v2/models/cnnkit-colours").json()
        assert meta["inputs"][0]["shape"] == [-1, 3, 32, 32]
        from cnnkit.runtime import Classifier
        from cnnkit.runtime.images import load

        clf = Classifier(str(work / "run" / "model.onnx"), device="cpu")
        x = np.stack([load(f, clf.info.geometry).pixels for f in files])
        head = json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": list(x.shape),
                                       "parameters": {"binary_data_size": x.size}}]}).encode()  # fmt: skip
        r = httpx.post(url + "/v2/models/cnnkit-colours/infer", content=head + x.tobytes(),
                       headers={"Inference-Header-Content-Length": str(len(head))})  # fmt: skip
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        logits = np.asarray(out["data"], np.float32).reshape(out["shape"])
        assert out["shape"] == [3, 3] and [clf.classes[i] for i in logits.argmax(1)] == predicted
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_explicit_data_dir_that_holds_no_data_is_one_line_and_no_fallback(tmp_path):
    from cnnkit.cli import main

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x")
    r = CliRunner().invoke(main, ["train", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1 and "neither IDX files" in r.stderr and "sample" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "run").exists()


def test_cnnkit_train_downloads_through_the_downloader_when_online(tmp_path, monkeypatch):
    from cnnkit.cli import main
    from helpers import write_idx_dataset

    fetched = []

    def fake_download(name: str, root: Path) -> Path:
        fetched.append(name)
        return write_idx_dataset(root / "MNIST" / "raw", n_train=64, n_test=16)

    monkeypatch.delenv("CNNKIT_OFFLINE")
    monkeypatch.setattr("cnnkit.train.download.download", fake_download)
    args = ["train", "--dataset", "mnist", "--out", str(tmp_path / "run"), "--max-steps", "1", "--recipe", "default",
            "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert fetched == ["mnist"] and json.loads(result.stdout)["dataset"]["name"] == "mnist"
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    result = CliRunner().invoke(main, [*args[:-1], "--out", str(tmp_path / "run2"), "--data-dir", str(tmp_path / "x")])
    assert result.exit_code != 0 and fetched == ["mnist"]


def test_a_set_that_does_not_fit_is_streamed_batch_by_batch_and_trains_exactly_the_same(tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    data = photos(tmp_path / "colours", n=8)
    args = ("train", "--data-dir", str(data), "--max-steps", "3", "--recipe", "default", "--batch-size", "8")
    r = cnnkit(*args, "--out", str(tmp_path / "held"), cwd=tmp_path)
    assert r.returncode == 0 and "streamed" not in r.stderr, r.stderr
    monkeypatch.setattr("cnnkit.train.data._free_bytes", lambda device: 1000)
    r = cnnkit(*args, "--out", str(tmp_path / "streamed"), cwd=tmp_path)
    assert r.returncode == 0 and "streamed from the memory-mapped cache batch by batch" in r.stderr, r.stderr
    held, streamed = (load_file(tmp_path / d / "model.safetensors") for d in ("held", "streamed"))
    assert all(np.array_equal(held[k], streamed[k]) for k in held)
