import json
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
from cnnkit.errors import ModelFileError
from cnnkit.export.artefacts import load_torchscript, read_info
from cnnkit.export.compare import Gate
from cnnkit.export.exporter import ExportOptions, export
from cnnkit.export.verify import verify
from cnnkit.train import checkpoint
from cnnkit.train.checkpoint import deployable


def test_round_trip_parity(exported, trained):
    report = verify(list(exported.artefacts.values()))
    assert report, report
    assert report.reference == trained.checkpoint
    by_kind = {b.backend: b for b in report.backends}
    assert by_kind["onnx"].ran_on == "CPUExecutionProvider"
    assert by_kind["onnx"].max_abs <= 1e-4
    real = [c for c in by_kind["onnx"].cases if "test images" in c.case]
    assert real and real[0].top1_agreement == 1.0
    assert {c.batch for c in by_kind["torchscript"].cases} >= {1, 37, 256}


def test_onnx_graph_contract(exported):
    model = onnx.load(exported.artefacts["onnx"])
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert out.name == "logits" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]


def test_metadata_round_trips(exported, trained):
    ck = checkpoint.load(trained.checkpoint)
    for path in exported.artefacts.values():
        info = read_info(Path(path))
        assert info.classes == ck.meta.classes
        assert info.mean == pytest.approx(ck.meta.mean) and info.std == pytest.approx(ck.meta.std)
        assert info.checkpoint_sha256 == ck.sha256
        assert info.raw["model_config"] == ck.meta.config.to_dict()
        assert info.raw["metrics"]["test_accuracy"] == trained.test_accuracy
        assert info.raw["versions"]["torch"] == torch.__version__


def test_perturbed_onnx_is_caught(exported, tmp_path):
    model = onnx.load(exported.artefacts["onnx"])
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w.flat[:100] += 0.05
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(model, bad)
    r = CliRunner().invoke(main, ["verify", str(bad), exported.artefacts["torchscript"], "--json"])
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout)
    assert not report["passed"]
    status = {b["backend"]: b["passed"] for b in report["backends"]}
    assert status == {"onnx": False, "torchscript": True}


def test_torchscript_loads_without_cnnkit(exported, trained, tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (37, 1, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, torch, warnings; warnings.simplefilter('ignore'); "
        f"m = torch.jit.load({exported.artefacts['torchscript']!r}); "
        f"y = m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))); "
        f"np.save({str(tmp_path / 'y.npy')!r}, y.detach().numpy()); "
        "assert not any(k.startswith('cnnkit') for k in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    ref = deployable(checkpoint.load(trained.checkpoint))(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, atol=1e-5)


def test_failed_parity_leaves_no_artefact(trained, tmp_path):
    result = export(trained.checkpoint, tmp_path, ExportOptions(formats=("onnx",), gate=Gate(atol=0, rtol=0)))  # exact
    assert not result.ok and result.artefacts == {}
    assert list(tmp_path.iterdir()) == []


def test_cli_export_verifies_and_writes(trained, tmp_path):
    r = CliRunner().invoke(main, ["export", trained.checkpoint, "--format", "onnx", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and out["parity"]["passed"] and Path(out["artefacts"]["onnx"]).is_file()


@pytest.mark.parametrize("name,content", [("bad.onnx", b"\x08\x07garbage"), ("bad.ts", b"PK\x03\x04garbage")])
def test_corrupt_artefacts_clear_error(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    r = CliRunner().invoke(main, ["verify", str(p)])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and name in r.stderr
    assert "Traceback" not in r.output


def test_corrupt_checkpoint_export(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"nonsense")
    r = CliRunner().invoke(main, ["export", str(p)])
    assert r.exit_code == 1 and "Error:" in r.stderr and "model.safetensors" in r.stderr


def test_torchscript_without_metadata(tmp_path):
    plain = tmp_path / "plain.ts"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(plain))
    with pytest.raises(ModelFileError, match="no cnnkit metadata"):
        load_torchscript(plain)
