"""Faster exported models that answer the same: the exact fold, INT8 and fp16 exports, their gates, evaluate,
bench side by side, and optimize."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from cnnkit.atomic import sha256_file
from cnnkit.cli import main
from cnnkit.data.datasets import load_sample
from cnnkit.export.compare import Gate
from cnnkit.export.exporter import ExportOptions, export
from cnnkit.runtime import Classifier, openvino_engine
from cnnkit.train import checkpoint
from cnnkit.train.checkpoint import deployable
from helpers import png

LENIENT = Gate(min_agreement=0.99, max_accuracy_drop=1.0)
LENIENT_FLAGS = ["--min-agreement", "0.99", "--max-accuracy-drop", "1"]


@pytest.fixture(scope="module")
def variants(trained, tmp_path_factory):
    """INT8 and fp16 exports of the session checkpoint, verified against gates loosened for this one-epoch model
    (93% accurate: its many borderline digits flip more easily than a trained model's)."""
    out = tmp_path_factory.mktemp("variants")
    made = {
        p: export(trained.checkpoint, out, ExportOptions(formats=("onnx",), precision=p, gate=LENIENT))
        for p in ("int8", "fp16")
    }
    for p, r in made.items():
        assert r.ok and r.artefacts["onnx"], (p, r.to_dict())
    return {p: Path(r.artefacts["onnx"]) for p, r in made.items()}


def test_fold_is_exact_and_default(trained, exported):
    ck = checkpoint.load(trained.checkpoint)
    x = torch.from_numpy(load_sample().test_images[:200].copy())
    with torch.no_grad():
        ref, folded = deployable(ck)(x), deployable(ck, fold=True)(x)
    assert torch.allclose(ref, folded, atol=1e-4, rtol=1e-3)
    model = onnx.load(exported.artefacts["onnx"])
    assert [n.op_type for n in model.graph.node].count("Gemm") == 1  # fc1 and fc2 are one layer
    clf = Classifier(exported.artefacts["onnx"], device="cpu")
    assert clf.info.folded and clf.info.precision == "fp32" and clf.info.variant == "fp32-folded"


def test_int8_and_fp16_keep_the_contract_and_record_their_variant(variants, exported):
    fp32 = Classifier(exported.artefacts["onnx"], device="cpu")
    x = load_sample().test_images[:300]
    for precision, path in variants.items():
        clf = Classifier(path, device="cpu")
        assert clf.session.get_inputs()[0].type == "tensor(uint8)" and clf.logits(x).dtype == np.float32
        assert clf.info.precision == precision and clf.info.folded
        assert clf.info.version != fp32.info.version  # each variant has its own model version
        agree = np.mean(clf.logits(x).argmax(1) == fp32.logits(x).argmax(1))
        assert agree >= 0.99
    cal = Classifier(variants["int8"], device="cpu").info.raw["variant"]["calibration"]
    assert cal["images"] == 512 and cal["dataset"] == "mnist-sample" and cal["method"] == "MinMax"
    nodes = [n.op_type for n in onnx.load(variants["int8"]).graph.node]
    assert "QuantizeLinear" in nodes and "DequantizeLinear" in nodes


def test_verify_gates_reduced_precision_on_the_real_test_split(variants):
    loose = ["--min-agreement", "0.99", "--max-accuracy-drop", "1.0"]
    r = CliRunner().invoke(main, ["verify", str(variants["int8"]), str(variants["fp16"]), *loose, "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    for b in report["backends"]:
        g = b["gate"]
        assert b["passed"] and g["images"] == 1000 and g["agreement"] >= 0.99 and g["accuracy_change"] >= -1.0
        assert g["reference_accuracy"] > 0.9
    # a gate the INT8 model cannot meet fails the check, with exit 1
    r = CliRunner().invoke(
        main, ["verify", str(variants["int8"]), "--min-agreement", "1.0", "--max-accuracy-drop", "0", "--json"]
    )
    gate = json.loads(r.stdout)["backends"][0]["gate"]
    assert (r.exit_code == 1) == (gate["agreement"] < 1.0 or gate["accuracy_change"] < 0)


def test_an_export_that_misses_its_gate_does_not_land(trained, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "export",
            trained.checkpoint,
            "--precision",
            "int8",
            "--out",
            str(tmp_path),
            "--min-agreement",
            "1.0",
            "--max-accuracy-drop",
            "0",
            "--json",
        ],
    )
    out = json.loads(r.stdout)
    if out["ok"]:
        pytest.skip("this INT8 model happens to agree on every test image")
    assert r.exit_code == 1 and out["artefacts"] == {} and not list(tmp_path.iterdir())


def test_nncf_makes_an_int8_file_of_its_own_recipe_that_is_gated_like_cnnkits(trained, variants, tmp_path):
    pytest.importorskip("nncf")
    args = ["export", trained.checkpoint, "--precision", "int8", "--quantizer", "nncf", "--out", str(tmp_path)]
    r = CliRunner().invoke(main, [*args, "--calibration-images", "128", *LENIENT_FLAGS, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    gate = out["parity"]["backends"][0]["gate"]
    assert gate["images"] == 1000 and gate["agreement"] >= 0.99  # judged on the real test split, as cnnkit's is
    clf = Classifier(out["artefacts"]["onnx"], device="cpu")
    assert clf.info.variant == "int8-nncf-folded" and clf.info.quantizer == "nncf"
    assert clf.info.raw["variant"]["calibration"]["method"].startswith("NNCF")
    assert clf.info.version != Classifier(variants["int8"], device="cpu").info.version
    assert clf.session.get_inputs()[0].type == "tensor(uint8)"

    def first_conv_quantized(path):
        graph = onnx.load(path).graph
        made_by = {o: n.op_type for n in graph.node for o in n.output}
        conv = next(n for n in graph.node if n.op_type == "Conv")
        return made_by.get(conv.input[0]) == "DequantizeLinear"

    # NNCF's recipe quantizes every convolution; cnnkit's keeps the first one (the normalised image's) in fp32
    assert first_conv_quantized(out["artefacts"]["onnx"]) and not first_conv_quantized(variants["int8"])
    # the same file into a Triton repository, verified where it lands
    repo = tmp_path / "repo"
    r = CliRunner().invoke(main, [*args[:2], "--format", "triton", *args[2:7], str(repo), "--calibration-images", "64",
                                  *LENIENT_FLAGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    (model,) = repo.glob("*/1/model.onnx")
    assert Classifier(model, device="cpu").info.variant == "int8-nncf-folded"
    r = CliRunner().invoke(main, ["export", trained.checkpoint, "--quantizer", "nncf", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "--quantizer nncf: applies to --precision int8 only" in r.stderr
    assert not (tmp_path / "x").exists()


def test_an_int8_file_gated_on_other_cpu_flags_is_re_checked_before_it_is_trusted(trained, variants, tmp_path):
    import shutil

    from cnnkit.errors import ModelFileError
    from cnnkit.runtime import EngineChoice
    from cnnkit.runtime.cpu import cpu_flags

    src = variants["int8"]
    record = json.loads((src.parent / "exports.json").read_text())["files"][src.name]["gated_on"]
    assert [(g["cpu_flags"], g["engine"]) for g in record] == [(cpu_flags(), "onnxruntime")]  # export gated it here
    assert record[0]["agreement"] >= 0.99
    shutil.copy(src, tmp_path / src.name)
    manifest = json.loads((src.parent / "exports.json").read_text())
    other = ["avx2", "fma"] if cpu_flags() != ["avx2", "fma"] else ["avx2", "fma", "avx512f", "avx512_vnni"]
    manifest["files"][src.name]["gated_on"] = [{**record[0], "cpu_flags": other}]  # as if gated on another CPU
    (tmp_path / "exports.json").write_text(json.dumps(manifest))
    model = str(tmp_path / src.name)
    with pytest.raises(ModelFileError, match="passed its accuracy gate on CPUs with 'avx2\\+fma.*Re-check it here"):
        Classifier(model, device="cpu")
    img = tmp_path / "x.png"
    img.write_bytes(png(load_sample().test_images[0, 0]))
    r = CliRunner().invoke(main, ["predict", model, str(img), "--device", "cpu"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "cnnkit verify" in r.stderr
    assert CliRunner().invoke(main, ["predict", model, str(img), "--device", "cpu", "--trust-int8"]).exit_code == 0
    r = CliRunner().invoke(main, ["doctor", model, "--json"])  # doctor says so too, and still opens the file
    assert "passed its accuracy gate on CPUs with 'avx2" in json.loads(r.stdout)["engines"]["int8_gate"], r.output
    r = CliRunner().invoke(main, ["verify", model, "--checkpoint", trained.checkpoint, *LENIENT_FLAGS])
    assert r.exit_code == 0 and "recorded in" in r.output, r.output
    assert Classifier(model, device="cpu").info.precision == "int8"  # gated here now: trusted
    if openvino_engine.available():  # each engine's INT8 kernels are their own: OpenVINO needs its own gate
        with pytest.raises(ModelFileError, match="in openvino"):
            Classifier(model, device="cpu", engine=EngineChoice(engine="openvino"))


def test_reduced_precision_is_onnx_only(trained, tmp_path):
    r = CliRunner().invoke(
        main, ["export", trained.checkpoint, "--format", "torchscript", "--precision", "int8", "--out", str(tmp_path)]
    )
    assert r.exit_code == 1 and "ONNX only" in r.stderr


def test_evaluate_matches_the_runtime_and_plots(variants, tmp_path):
    png = tmp_path / "confusion.png"
    r = CliRunner().invoke(main, ["evaluate", str(variants["int8"]), "--json", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    ds = load_sample()
    pred = Classifier(variants["int8"], device="cpu").logits(ds.test_images).argmax(1)
    assert out["images"] == 1000 and out["accuracy"] == pytest.approx(float(np.mean(pred == ds.test_labels)))
    m = np.array(out["confusion"])
    assert m.sum() == 1000 and m.trace() == round(out["accuracy"] * 1000)
    assert [c["images"] for c in out["per_class"]] == [100] * 10
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_shows_every_variant_as_its_own_row(variants, exported):
    files = [exported.artefacts["onnx"], str(variants["int8"]), str(variants["fp16"])]
    r = CliRunner().invoke(
        main,
        ["bench", *files, "--backends", "onnx", "--batch-sizes", "2", "--iters", "2", "--warmup", "1", "--json", "-"],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert [x["backend"] for x in rows] == ["onnx:fp32-folded", "onnx:int8-folded", "onnx:fp16-folded"]


@pytest.mark.slow
def test_optimize_picks_a_passing_variant_and_selects_it(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(Path(trained.checkpoint).parent, run)
    for f in run.glob("model.*"):
        if f.suffix != ".safetensors":
            f.unlink()
    r = CliRunner().invoke(
        main,
        [
            "optimize",
            str(run),
            "--batch-sizes",
            "4",
            "--min-time",
            "0.05",
            "--select",
            "--target-batch",
            "4",
            "--min-agreement",
            "0.99",
            "--max-accuracy-drop",
            "1",
            "--json",
            "-",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    passed = {c["name"] for c in out["candidates"] if c["passed"]}
    assert {"fp32", "fp32-folded", "int8-folded", "torchscript-folded", "exported-folded"} <= passed
    checks = {c["name"]: c["check"] for c in out["candidates"]}
    assert checks["fp16-folded"].startswith("skipped") and "pass --aoti" in checks["aoti-folded"]
    # the torch-side candidates are rows of the same side-by-side run as the ONNX ones
    rows = {r["backend"] for r in out["bench"]["rows"]}
    assert {"torchscript", "exported"} <= rows and any(r.startswith("onnx:") for r in rows)
    name, _, engine_label = out["selected"].partition(" on ")
    assert set(out["winners"]) == {"4"} and name in passed
    selected = Classifier(run / "model.onnx", device="cpu")
    assert selected.info.variant == name
    # every ONNX candidate was checked in each other engine that would run it, and the choice travels with the file
    if openvino_engine.available():
        checked = {(c["candidate"], c["choice"]) for c in out["engine_checks"] if c["passed"]}
        assert {("fp32-folded", "openvino"), ("int8-folded", "openvino")} <= checked
        # OpenVINO's THROUGHPUT mode is measured with two batches in flight, and chosen only for such callers
        assert any(r.startswith("openvino-2r:") for r in rows)
        assert set(out["in_flight_winners"]) == {"4"} and "-2r" not in out["winners"]["4"]
    if importlib.util.find_spec("nncf") is not None:  # NNCF's INT8 is a candidate of its own
        assert "int8-nncf-folded" in {c["name"] for c in out["candidates"]}
    # the INT8 gates travel with the selected file: where it was judged is in its record
    if name.startswith("int8"):
        gated = json.loads((run / "exports.json").read_text())["files"]["model.onnx"]["gated_on"]
        assert {g["engine"] for g in gated} >= {"onnxruntime"}
    assert selected.plan.source == str(run / "runtime.json")
    assert selected.plan.choice_for(4).label == engine_label
    # a first-class export: it verifies where it landed, and the run's record matches the file
    r = CliRunner().invoke(main, ["verify", str(run / "model.onnx"), *LENIENT_FLAGS, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["passed"], r.output
    record = json.loads((run / "exports.json").read_text())["files"]["model.onnx"]
    assert record["sha256"] == sha256_file(run / "model.onnx") and record["model_version"] == selected.info.version
    # the unfolded candidate (export fold=False) mirrors the training module: two linear layers
    unfolded = next(c["file"] for c in out["candidates"] if c["name"] == "fp32")
    assert not Classifier(unfolded, device="cpu").info.folded
    assert [n.op_type for n in onnx.load(unfolded).graph.node].count("Gemm") == 2


def test_optimize_never_writes_through_a_symlinked_candidates_folder(trained, tmp_path):
    """A run folder unpacked from a tarball may hold a link: optimize refuses it before emptying or writing."""
    import shutil

    run, elsewhere = tmp_path / "run", tmp_path / "precious"
    shutil.copytree(Path(trained.checkpoint).parent, run)
    (elsewhere / "fp32").mkdir(parents=True)
    (elsewhere / "fp32" / "keep.txt").write_text("mine")
    (run / "candidates").symlink_to(elsewhere, target_is_directory=True)
    r = CliRunner().invoke(main, ["optimize", str(run), "--batch-sizes", "4", "--min-time", "0.05"])
    assert r.exit_code == 1 and "a symbolic link; optimize writes only inside the run folder" in r.stderr, r.output
    assert (elsewhere / "fp32" / "keep.txt").read_text() == "mine" and sorted(elsewhere.iterdir()) == [
        elsewhere / "fp32"
    ]
