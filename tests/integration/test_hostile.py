"""Untrusted files and careless options: each gets one line and a non-zero exit (or a 4xx), never a traceback, and
nothing is run, read or kept that should not be."""

import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from cnnkit.cli import main
from cnnkit.contract import MANIFEST
from cnnkit.errors import CheckpointError, ModelFileError
from cnnkit.export.artefacts import load_torchscript, torchscript_metadata
from cnnkit.runtime import Classifier
from cnnkit.train import checkpoint
from helpers import line_with as _line_with
from helpers import sigint_default


def rewrite(src, dst, meta=None, nan_bias=False):
    """A copy of an exported ONNX file with its cnnkit metadata edited by `meta(dict)`, or its output made NaN."""
    proto = onnx.load(str(src))
    if meta is not None:
        prop = next(p for p in proto.metadata_props if p.key == "cnnkit")
        d = json.loads(prop.value)
        meta(d)
        prop.value = json.dumps(d)
    if nan_bias:
        init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)) if len(t.dims) == 1 else 0)
        arr = numpy_helper.to_array(init).copy()
        arr[:] = np.nan
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def onnx_file(exported):
    return exported.artefacts["onnx"]


def test_metadata_that_lies_about_the_graph_is_refused_at_load(onnx_file, tmp_path):
    cases = {
        "size": (lambda d: d["input"].update(shape=["batch", 1, 20000, 20000]), "not within 1..1024"),
        "small": (lambda d: d["input"].update(shape=["batch", 1, 32, 32]), "has shape"),
        "classes": (lambda d: d.update(classes=["a", "b", "c"]), "has 10 outputs but its metadata names 3"),
        "ansi": (lambda d: d["classes"].__setitem__(0, "\x1b[2J"), "printable"),
        "newline": (lambda d: d["classes"].__setitem__(1, "1\n2 99%"), "printable"),
        "std": (lambda d: d["normalization"].update(std=0), "not usable"),
    }
    for name, (edit, match) in cases.items():
        path = rewrite(onnx_file, tmp_path / f"{name}.onnx", meta=edit)
        with pytest.raises(ModelFileError, match=match):
            Classifier(path, device="cpu")
        r = CliRunner().invoke(main, ["predict", str(path), str(path)])
        assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.output, name


def test_nan_logits_are_an_error_with_strict_json_and_serve_refuses(onnx_file, tmp_path):
    bad = rewrite(onnx_file, tmp_path / "nan.onnx", nan_bias=True)
    png = tmp_path / "digit.png"
    from helpers import png as to_png

    png.write_bytes(to_png(np.zeros((28, 28), np.uint8)))
    r = CliRunner().invoke(main, ["predict", str(bad), str(png), "--json"])
    assert r.exit_code == 1
    out = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert "not finite" in out["results"][0]["error"]
    r = CliRunner().invoke(main, ["serve", str(bad), "--port", "0"])
    assert r.exit_code == 1 and "not finite" in r.stderr


def test_exports_record_no_absolute_paths_and_follow_none(exported, tmp_path):
    info = Classifier(exported.artefacts["onnx"], device="cpu").info
    assert not os.path.isabs(info.checkpoint_path)
    text = json.dumps(info.raw)
    assert "/tmp/" not in text and str(tmp_path.parent) not in text
    # the exporter's node metadata (stack traces naming this machine's folders) is stripped
    model = onnx.load(exported.artefacts["onnx"])
    assert not [n for n in model.graph.node if n.metadata_props]
    raw = Path(exported.artefacts["onnx"]).read_bytes()
    assert str(Path(__file__).parents[2]).encode() not in raw and b"/tmp/" not in raw
    # metadata naming another file: only a relative path to a .safetensors file, used only if its SHA-256 matches;
    # a refused path gets the same answer whether or not something is there
    victim = tmp_path / "secret.safetensors"
    victim.write_bytes(b"not yours")
    answers = set()
    for recorded in (
        "/etc/passwd",
        "../../../../etc/passwd",
        "../../../../../nowhere",
        "../../../../etc/shadow",
    ):
        edit = functools.partial(lambda d, p: d["checkpoint"].update(path=p), p=recorded)
        lying = rewrite(exported.artefacts["onnx"], tmp_path / "m.onnx", meta=edit)
        r = CliRunner().invoke(main, ["verify", str(lying)])
        assert r.exit_code == 1 and "not one cnnkit export writes" in r.stderr, (recorded, r.stderr)
        answers.add(r.stderr)
    assert len(answers) == 1
    lying = rewrite(
        exported.artefacts["onnx"],
        tmp_path / "m.onnx",
        meta=lambda d: d["checkpoint"].update(path="secret.safetensors"),
    )
    r = CliRunner().invoke(main, ["verify", str(lying)])
    assert r.exit_code == 1 and "not the checkpoint m.onnx was exported from" in r.stderr


def test_metadata_of_the_wrong_type_or_depth_is_one_line(onnx_file, tmp_path):
    wrong = rewrite(onnx_file, tmp_path / "w.onnx", meta=lambda d: d["checkpoint"].update(path=12345))
    r = CliRunner().invoke(main, ["verify", str(wrong)])
    assert r.exit_code == 1 and "checkpoint path must be a string" in r.stderr and "Traceback" not in r.output
    proto = onnx.load(onnx_file)
    next(p for p in proto.metadata_props if p.key == "cnnkit").value = "[" * 100_000
    deep = tmp_path / "deep.onnx"
    onnx.save(proto, str(deep))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        Classifier(deep, device="cpu")
    r = CliRunner().invoke(main, ["predict", str(deep), str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "not valid JSON" in r.stderr and "Traceback" not in r.output


def test_bench_where_every_backend_fails_is_rows_not_a_crash(trained, tmp_path):
    broken = tmp_path / "broken.ts"
    broken.write_bytes(b"PK\x03\x04 not TorchScript")
    args = ["bench", trained.out_dir, str(broken), "--backends", "torchscript", "--batch-sizes", "2", "--iters", "2"]
    r = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 1 and "Traceback" not in r.output and "backend(s) torchscript failed" in r.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(x["backend"], x["latency"]) for x in rows] == [("torchscript", None)] and rows[0]["error"]


def test_report_destinations_in_missing_folders_are_refused_before_work(onnx_file, tmp_path):
    missing = tmp_path / "nowhere" / "confusion.png"
    r = CliRunner().invoke(main, ["evaluate", onnx_file, "--plot", str(missing)])
    assert r.exit_code == 1 and "No such folder" in r.stderr and not missing.parent.exists()
    r = CliRunner().invoke(
        main, ["bench", onnx_file, "--backends", "onnx", "--json", str(missing.with_suffix(".json"))]
    )
    assert r.exit_code == 1 and "No such folder" in r.stderr and not missing.parent.exists()


def test_a_torchscript_file_found_in_a_folder_never_runs_even_with_a_forged_record(trained, tmp_path):
    """Whoever can write a run folder can swap model.ts and re-hash exports.json: bench RUN still never loads it
    (a fresh one is exported from the checkpoint) unless --trust-torchscript."""
    from cnnkit.atomic import sha256_file
    from cnnkit.export.exporter import ExportOptions, export

    run = tmp_path / "run"
    shutil.copytree(trained.out_dir, run)
    export(run / "model.safetensors", run, ExportOptions(formats=("torchscript",), verify=False))
    ts = run / "model.ts"

    class Forged(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            print("FORGED CODE RAN")
            return images.float().mean((1, 2, 3))[:, None].repeat(1, 10)

    extra = {"cnnkit.json": json.dumps(torchscript_metadata(ts).raw)}
    torch.jit.save(torch.jit.script(Forged()), str(ts), _extra_files=extra)
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["files"]["model.ts"]["sha256"] = sha256_file(ts)  # the record forged to match
    (run / MANIFEST).write_text(json.dumps(manifest))
    args = ["bench", str(run), "--backends", "torchscript", "--batch-sizes", "2", "--iters", "2", "--warmup", "1"]
    proc = subprocess.run([sys.executable, "-m", "cnnkit", *args, "--json", "-"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "FORGED" not in proc.stdout + proc.stderr
    notes = json.loads(proc.stdout)["notes"]
    assert any("model.ts not loaded" in n for n in notes) and any("torchscript exported" in n for n in notes)
    trusted = subprocess.run(
        [sys.executable, "-m", "cnnkit", *args, "--trust-torchscript"], capture_output=True, text=True
    )
    assert "FORGED CODE RAN" in trusted.stdout  # the user's explicit choice
    load_torchscript(ts)  # naming a file explicitly is the user's own trust


@pytest.mark.slow
def test_second_ctrl_c_ends_a_torchscript_forward_that_never_returns(exported, tmp_path):
    class Forever(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.float()
            print("forever: started")
            while bool(x.sum() >= 0):
                x = x + 1
            return x

    ts = tmp_path / "forever.ts"
    meta = Classifier(exported.artefacts["onnx"], device="cpu").info.raw
    torch.jit.save(torch.jit.script(Forever()), str(ts), _extra_files={"cnnkit.json": json.dumps(meta)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "verify", str(ts), "--checkpoint", exported.checkpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=sigint_default,
    )
    assert proc.stdout.readline().strip() == b"forever: started"  # inside the endless forward (native code)
    proc.send_signal(signal.SIGINT)
    assert b"Ctrl-C again" in _line_with(proc.stderr, b"Interrupted")  # the first one was seen
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("a second Ctrl-C did not end the process")
    assert proc.returncode == 130, err.decode()[-500:]


def test_crafted_checkpoint_headers_are_one_line(trained, tmp_path):
    from safetensors.torch import save_file

    good = json.loads((checkpoint.resolve(trained.out_dir).parent / "checkpoint.json").read_text())
    tensors = {"w": torch.zeros(1)}
    cases = {
        "not json": ("{nope", "not valid JSON"),
        "list": ("[]", "not a cnnkit checkpoint"),
        "kernel": (json.dumps({**good, "config": {**good["config"], "kernel_size": -5}}), "kernel_size=-5"),
        "huge": (json.dumps({**good, "config": {**good["config"], "hidden": 10**11}}), "hidden=100000000000"),
        "bool": (json.dumps({**good, "config": {**good["config"], "hidden": True}}), "hidden=True"),
        "std0": (json.dumps({**good, "std": 0}), "not usable"),
        "classes": (json.dumps({**good, "classes": ["a", "b", "c"]}), "3 class names for a model with 10 outputs"),
    }
    for name, (meta, match) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"cnnkit": meta})
        with pytest.raises(CheckpointError, match=match):
            checkpoint.load(path)
    r = CliRunner().invoke(main, ["export", str(tmp_path / "classes.safetensors")])
    assert r.exit_code == 1 and "3 class names" in r.stderr


def test_options_out_of_bounds_are_refused_before_any_work(onnx_file, tmp_path):
    for args in (
        ["serve", onnx_file, "--max-delay-ms", "inf"],
        ["serve", onnx_file, "--max-delay-ms", "nan"],
        ["serve", onnx_file, "--max-body-mb", "nan"],
        ["serve", onnx_file, "--threads", "1000"],
        ["train", "--lr", "nan"],
        ["train", "--seed", "1" * 22],
        ["bench", onnx_file, "--backends", ","],
        ["verify", onnx_file, "--atol", "nan"],
        ["export", "x", "--opset", "7"],
        ["export", "x", "--opset", "99"],
    ):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)


def test_predict_reads_regular_files_only(onnx_file, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    r = CliRunner().invoke(main, ["predict", onnx_file, str(fifo), "/dev/zero"])
    assert r.exit_code == 1 and r.stderr.count("not a regular file") == 2


@pytest.mark.slow
def test_ctrl_c_during_export_exits_130_and_leaves_nothing(trained, tmp_path):
    out = tmp_path / "export"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "export", trained.out_dir, "--out", str(out), "--format", "onnx"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=sigint_default,
    )
    _line_with(proc.stderr, b"exporting onnx")  # torch.export starts now; it wraps a Ctrl-C in its own error
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"export failed" not in err, err.decode()[-500:]
    assert not out.exists()


def test_the_onnx_path_never_loads_torchscript(exported, tmp_path):
    """predict/serve/the runtime take ONNX only: a .ts file is refused as not ONNX, never handed to torch.jit."""
    ts = exported.artefacts["torchscript"]
    with pytest.raises(ModelFileError):
        Classifier(ts, device="cpu")
    r = CliRunner().invoke(main, ["serve", ts, "--port", "0"])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.output


def test_a_model_pointing_at_external_data_is_refused_in_every_engine_from_any_folder(onnx_file, tmp_path, monkeypatch):
    """A relative external-data location would be resolved against the working directory, not the model's folder:
    no such model is read, from its own folder or from another, whatever the file named holds."""
    proto = onnx.load(str(onnx_file))
    model_dir, elsewhere = tmp_path / "model", tmp_path / "elsewhere"
    model_dir.mkdir()
    elsewhere.mkdir()
    onnx.save_model(proto, str(model_dir / "ext.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    shutil.copy(model_dir / "w.bin", elsewhere / "w.bin")  # the "secret" a crafted model would hand back
    engines = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for cwd in (model_dir, elsewhere):
        monkeypatch.chdir(cwd)
        for engine in engines:
            r = CliRunner().invoke(main, ["predict", str(model_dir / "ext.onnx"), str(onnx_file), "--engine", engine])
            assert r.exit_code == 1, (cwd, engine, r.output)
            assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
            assert "keeps its data in an external file" in r.stderr
    with pytest.raises(ModelFileError, match="external file"):
        Classifier((model_dir / "ext.onnx").read_bytes(), device="cpu")
