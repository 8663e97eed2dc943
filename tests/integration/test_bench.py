import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cnnkit.bench.results import summarize
from cnnkit.cli import main
from cnnkit.runtime import openvino_engine


def test_summarize_known_data():
    st = summarize(np.arange(1, 101) / 1000.0)  # 1..100 ms
    assert st.n == 100 and st.mean_ms == pytest.approx(50.5) and st.min_ms == pytest.approx(1.0)
    assert st.p50_ms == pytest.approx(50.5) and st.p90_ms == pytest.approx(90.1) and st.p99_ms == pytest.approx(99.01)
    assert summarize([0.002]).p99_ms == pytest.approx(2.0)
    with pytest.raises(ValueError):
        summarize([])


def test_bench_end_to_end_tiny(trained, exported, tmp_path):
    out_json, out_csv, out_png = tmp_path / "b.json", tmp_path / "b.csv", tmp_path / "b.png"
    r = CliRunner().invoke(
        main,
        [
            "bench",
            exported.artefacts["onnx"],
            exported.artefacts["torchscript"],
            "--batch-sizes",
            "1,4",
            "--warmup",
            "2",
            "--iters",
            "5",
            "--threads",
            "1",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--plot",
            str(out_png),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(out_json.read_text())
    assert data["device"] == "cpu" and data["settings"]["threads"] == 1
    for key in ("cpu", "cpu_cores", "torch", "onnxruntime", "cnnkit", "python", "command"):
        assert data["environment"][key]
    env = data["environment"]  # what was measured: the commit of this checkout and whether it had changes
    assert isinstance(env["cpu_flags"], list) and len(env["commit"]) == 40
    assert env["uncommitted_changes"] in (True, False)
    rows = data["rows"]
    engines = ("onnx", "openvino") if openvino_engine.available() else ("onnx",)  # the default: every engine here
    assert {(x["backend"], x["batch_size"]) for x in rows} == {
        (b, n) for b in ("eager", "torchscript", *engines) for n in (1, 4)
    }
    for x in rows:
        assert x["latency"]["n"] == 5 and 0 < x["latency"]["p50_ms"] <= x["latency"]["p99_ms"]
        assert x["images_per_s"] > 0 and x["speedup_vs_eager"] > 0 and not x["fell_back"]
        assert len(x["rounds_images_per_s"]) == 5 and min(x["rounds_images_per_s"]) > 0  # one rate per round
    assert {x["ran_on"] for x in rows if x["backend"] == "onnx"} == {"CPUExecutionProvider"}
    assert [x["speedup_vs_eager"] for x in rows if x["backend"] == "eager"] == [1.0, 1.0]
    assert {x["ran_on"] for x in rows if x["backend"] == "openvino"} <= {"OpenVINO CPU (fp32)"}
    assert len(list(csv.DictReader(out_csv.open()))) == 2 * (2 + len(engines))
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert "p50 ms" in r.stdout and "onnx" in r.stdout


def test_bench_from_checkpoint_only_exports_on_the_fly(trained):
    r = CliRunner().invoke(
        main,
        [
            "bench",
            trained.checkpoint,
            "--backends",
            "onnx",
            "--batch-sizes",
            "2",
            "--warmup",
            "1",
            "--iters",
            "2",
            "--json",
            "-",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["rows"][0]["backend"] == "onnx" and "exported from the checkpoint" in data["notes"][0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_bench_cuda_unavailable(trained):
    r = CliRunner().invoke(main, ["bench", trained.checkpoint, "--device", "cuda"])
    assert r.exit_code == 1 and r.stderr.startswith("Error: --device cuda: ") and "GPU" in r.stderr


def test_bench_bad_inputs(tmp_path, trained):
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "not found" in r.stderr
    r = CliRunner().invoke(main, ["bench", trained.checkpoint, "--batch-sizes", "1,x"])
    assert r.exit_code == 2 and "comma-separated" in r.output
    r = CliRunner().invoke(main, ["bench", trained.checkpoint, "--backends", "onnx-cudagraph"])
    assert r.exit_code == 1 and "Error: --device cpu: onnx-cudagraph run on CUDA only" in r.stderr


def test_a_failing_backend_is_a_row_and_the_others_still_land(trained, exported, tmp_path):
    import shutil
    from pathlib import Path

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(exported.artefacts["onnx"], run / "model.onnx")
    broken = tmp_path / "broken.ts"  # named on the command line, so bench tries to load it
    broken.write_bytes(b"PK\x03\x04 this is not a TorchScript archive")
    for f in Path(trained.checkpoint).parent.iterdir():
        if f.name in ("model.safetensors", "checkpoint.json"):
            shutil.copy(f, run / f.name)
    out_json, out_csv = tmp_path / "b.json", tmp_path / "b.csv"
    r = CliRunner().invoke(
        main,
        [
            "bench",
            str(run),
            str(broken),
            "--backends",
            "eager,torchscript,onnx",
            "--batch-sizes",
            "1,2",
            "--warmup",
            "1",
            "--iters",
            "2",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
        ],
    )
    assert r.exit_code == 1 and "torchscript" in r.stderr and "Traceback" not in r.output
    rows = json.loads(out_json.read_text())["rows"]
    bad = [x for x in rows if x["backend"] == "torchscript"]
    good = [x for x in rows if x["backend"] != "torchscript"]
    assert len(bad) == 2 and all(x["error"] and x["latency"] is None for x in bad)
    assert {x["backend"] for x in good} == {"eager", "onnx"} and all(x["images_per_s"] > 0 for x in good)
    assert "FAILED torchscript" in r.stdout
    assert [row["error"] != "" for row in csv.DictReader(out_csv.open()) if row["backend"] == "torchscript"] == [
        True
    ] * 2
