"""The runtime's engines: OpenVINO beside ONNX Runtime on the same file, streams, the plan `--engine auto` reads
(runtime.json), what happens when an engine cannot run, the gate in the engine that runs, and a served request on
each engine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cnnkit.data.datasets import load_sample
from cnnkit.errors import CnnkitError, DeviceError, MissingExtraError
from cnnkit.runtime import Classifier, EngineChoice, openvino_engine, plan
from helpers import png

needs_openvino = pytest.mark.skipif(not openvino_engine.available(), reason="the openvino extra is not installed")


@pytest.fixture(scope="module")
def onnx_file(exported):
    return exported.artefacts["onnx"]


@pytest.fixture(scope="module")
def images():
    return load_sample().test_images[:200].reshape(-1, 1, 28, 28)


@pytest.fixture(scope="module")
def ort_logits(onnx_file, images):
    return Classifier(onnx_file, device="cpu", engine="onnxruntime").logits(images)


@needs_openvino
def test_openvino_runs_the_same_file_to_the_same_answers_and_says_so(onnx_file, images, ort_logits):
    clf = Classifier(onnx_file, device="cpu", engine="openvino")
    assert clf.engine == "openvino" and clf.providers == ["OpenVINO CPU"]
    assert clf.precision == "fp32"  # asked for explicitly, never OpenVINO's silent bf16
    assert clf.classes == tuple("0123456789") and clf.info.version  # the same metadata, read by OpenVINO
    out = clf.logits(images)
    assert out.dtype == np.float32 and out.shape == ort_logits.shape
    np.testing.assert_allclose(out, ort_logits, atol=1e-4, rtol=1e-3)
    assert (out.argmax(1) == ort_logits.argmax(1)).all()
    assert clf.node_assignment is None and clf.session is None  # no ONNX Runtime session behind it


@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_streams_keep_every_row_in_its_place(onnx_file, images, ort_logits, engine):
    clf = Classifier(onnx_file, device="cpu", engine=EngineChoice(engine=engine, streams=3))
    for n in (1, 2, 37, 200):  # fewer images than streams, uneven parts, a whole batch
        np.testing.assert_allclose(clf.logits(images[:n]), ort_logits[:n], atol=1e-4, rtol=1e-3)


def test_an_engine_that_cannot_run_is_a_clear_error_not_a_silent_switch(onnx_file, monkeypatch):
    with pytest.raises(DeviceError, match="engine=.openvino.: runs on the CPU only"):
        Classifier(onnx_file, device="cuda", engine="openvino", fallback="ignore")
    with pytest.raises(CnnkitError, match="no bf16"):
        EngineChoice(engine="onnxruntime", precision="bf16")
    with pytest.raises(CnnkitError, match="unknown engine"):
        Classifier(onnx_file, device="cpu", engine="tensorflow")
    monkeypatch.setattr(openvino_engine, "capabilities", lambda core=None: ["FP32", "INT8"])
    if openvino_engine.available():
        with pytest.raises(DeviceError, match="bf16 needs a CPU"):
            Classifier(onnx_file, device="cpu", engine=EngineChoice(engine="openvino", precision="bf16"))
    monkeypatch.setattr(openvino_engine, "available", lambda: False)
    with pytest.raises(MissingExtraError, match=r"cnnkit\[openvino\]"):
        Classifier(onnx_file, device="cpu", engine="openvino")


@pytest.fixture
def model_copy(onnx_file, tmp_path):
    dest = tmp_path / "model.onnx"
    shutil.copy(onnx_file, dest)
    return dest


@needs_openvino
def test_auto_runs_the_recorded_choice_for_each_batch_size(model_copy, images, ort_logits):
    ov = Classifier(model_copy, device="cpu", engine="openvino").logits(images[:64])
    plan.save(model_copy, {1: EngineChoice(), 8: EngineChoice(engine="openvino")}, {})
    clf = Classifier(model_copy, device="cpu")  # engine="auto"
    assert clf.engine == "onnxruntime+openvino" and clf.plan.source.endswith("runtime.json")
    # the engines differ in the last bits: which one ran each batch shows in the numbers themselves
    assert np.array_equal(clf.logits(images[:1]), ort_logits[:1])
    assert np.array_equal(clf.logits(images[:7]), ort_logits[:7])
    assert np.array_equal(clf.logits(images[:64]), ov)


def test_auto_ignores_a_record_for_another_file_another_cpu_or_a_broken_one(model_copy):
    plan.save(model_copy, {1: EngineChoice(streams=2)}, {})
    assert Classifier(model_copy, device="cpu").runs_on()[0]["streams"] == 2
    record = plan.record_path(model_copy)
    data = json.loads(record.read_text())
    many = {str(n): EngineChoice(streams=n).to_dict() for n in range(1, 20)}  # each choice would open sessions
    bf16 = {"1": EngineChoice(engine="openvino", precision="bf16").to_dict()}
    cases = [
        (lambda d: d["models"]["model.onnx"].update(sha256="0" * 64), "another file"),
        (lambda d: d.update(cpu="Some Other CPU"), "Some Other CPU"),
        (lambda d: d.update(cpu_flags=["avx512f", "amx_tile"]), "measured on a CPU with 'avx512f+amx_tile'"),
        (lambda d: d.pop("cpu_flags"), "measured on a CPU with 'no CPU flags'"),  # a record from before flags
        (lambda d: d["models"]["model.onnx"]["winners"].update({"1": {"engine": "tensorflow"}}), "unknown engine"),
        (lambda d: d["models"]["model.onnx"].update(winners={}), "records no engine choice"),
        (lambda d: d["models"]["model.onnx"].update(winners=many), "more than 8 engine choices"),
        (lambda d: d.update(cpu="x\nError: forged"), "'x\\nError: forged'"),  # quoted, one line
    ]
    if openvino_engine.available() and "BF16" not in openvino_engine.capabilities():  # where it has it, it is used
        cases.append((lambda d: d["models"]["model.onnx"].update(winners=bf16), "names bf16, which this CPU lacks"))
    for change, note in cases:
        changed = json.loads(json.dumps(data))
        change(changed)
        record.write_text(json.dumps(changed))
        clf = Classifier(model_copy, device="cpu")
        assert clf.engine == "onnxruntime" and clf.runs_on()[0]["streams"] == 1
        assert note in (clf.plan.note or "")
    record.write_text("{not json")
    assert "unreadable" in (Classifier(model_copy, device="cpu").plan.note or "")


def test_cli_engine_options(onnx_file, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from cnnkit.cli import main

    runner = CliRunner()
    img = tmp_path / "seven.png"
    Image.fromarray(load_sample().test_images[0, 0]).save(img)
    r = runner.invoke(main, ["predict", onnx_file, str(img), "--device", "cpu", "--streams", "2"])
    assert r.exit_code == 2 and "--streams needs --engine" in r.output
    r = runner.invoke(main, ["serve", onnx_file, "--requests", "2", "--engine", "onnxruntime"])
    assert r.exit_code == 2 and "--requests is OpenVINO's THROUGHPUT mode" in r.output
    r = runner.invoke(main, ["predict", onnx_file, str(img), "--device", "cpu", "--engine", "onnxruntime", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["engine"] == "onnxruntime"
    if openvino_engine.available():
        r = runner.invoke(main, ["predict", onnx_file, str(img), "--device", "cpu", "--engine", "openvino"])
        assert r.exit_code == 0 and "on openvino (OpenVINO CPU, fp32)" in r.output


@needs_openvino
def test_a_served_request_on_openvino(onnx_file):
    from starlette.testclient import TestClient

    from cnnkit.serve import create_app

    img = load_sample().test_images[0, 0]
    answers = {}
    for engine in ("onnxruntime", "openvino"):
        app = create_app(Classifier(onnx_file, device="cpu", engine=engine))
        with TestClient(app) as client:
            assert client.get("/readyz").json()["providers"] == Classifier(onnx_file, engine=engine).providers
            r = client.post("/v1/predict", files={"file": ("x.png", png(img), "image/png")})
            assert r.status_code == 200
            answers[engine] = r.json()["predictions"][0]
    assert answers["openvino"]["label"] == answers["onnxruntime"]["label"]
    np.testing.assert_allclose(answers["openvino"]["probabilities"], answers["onnxruntime"]["probabilities"], atol=1e-5)


@needs_openvino
def test_verify_judges_the_numbers_of_the_engine_that_will_run_the_file(onnx_file):
    from click.testing import CliRunner

    from cnnkit.cli import main

    r = CliRunner().invoke(main, ["verify", onnx_file, "--engine", "openvino", "--json"])
    report = json.loads(r.stdout)
    assert r.exit_code == 0 and report["passed"], r.output
    assert report["backends"][0]["ran_on"] == "OpenVINO CPU"
    r = CliRunner().invoke(main, ["verify", onnx_file, "--engine", "openvino", "--engine-precision", "bf16", "--json"])
    report = json.loads(r.stdout)["backends"][0]
    if "BF16" in openvino_engine.capabilities():  # judged like fp16: on the real test split
        assert report["gate"] is not None and "bf16" in report["ran_on"]
    else:  # refused, in one line, as a failed check
        assert r.exit_code == 1 and "bf16 needs a CPU" in report["error"]


@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_every_engine_takes_read_only_strided_and_borrowed_batches(onnx_file, images, ort_logits, engine):
    """What the protocols deliver: a read-only buffer (np.frombuffer of a V2 body), a strided view, a view into a
    larger buffer; the same logits as a plain array."""
    clf = Classifier(onnx_file, device="cpu", engine=engine)
    read_only = np.frombuffer(images[:8].tobytes(), np.uint8).reshape(8, 1, 28, 28)
    assert not read_only.flags.writeable
    strided = np.repeat(images[:8], 2, axis=0)[::2]
    borrowed = np.frombuffer(b"\0" * 100 + images[:8].tobytes(), np.uint8, offset=100).reshape(8, 1, 28, 28)
    for batch in (read_only, strided, borrowed, read_only[:1]):
        np.testing.assert_allclose(clf.logits(batch), ort_logits[: len(batch)], atol=1e-4)


@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_binary_and_json_v2_requests_are_served_on_every_engine(onnx_file, images, ort_logits, engine):
    from starlette.testclient import TestClient

    from cnnkit.serve import create_app
    from helpers import v2_binary_header

    clf = Classifier(onnx_file, device="cpu", engine=engine)
    with TestClient(create_app(clf)) as client:
        name = clf.info.serving_name
        for n in (1, 8, 64):
            header = v2_binary_header(n)
            r = client.post(
                f"/v2/models/{name}/infer",
                content=header + images[:n].tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            assert r.status_code == 200, (n, r.text[:300])
            got = json.loads(r.content)["outputs"][0]["data"]
            np.testing.assert_allclose(np.reshape(got, (n, 10)), ort_logits[:n], atol=1e-4)
        doc = {
            "inputs": [
                {"name": "images", "datatype": "UINT8", "shape": [1, 1, 28, 28], "data": images[0].ravel().tolist()}
            ]
        }
        r = client.post(f"/v2/models/{name}/infer", json=doc)
        assert r.status_code == 200
        np.testing.assert_allclose(np.reshape(r.json()["outputs"][0]["data"], (1, 10)), ort_logits[:1], atol=1e-4)


@needs_openvino
def test_requests_in_flight_give_each_concurrent_caller_its_own_rows(onnx_file, images, ort_logits):
    from concurrent.futures import ThreadPoolExecutor

    clf = Classifier(onnx_file, device="cpu", engine=EngineChoice(engine="openvino", requests=2))
    assert clf.in_flight == 2 and clf.runs_on()[0]["label"] == "openvino-2r"
    assert Classifier(onnx_file, device="cpu", engine="openvino").in_flight == 1
    parts = [(i, n) for i, n in enumerate((1, 7, 64, 3, 25, 50, 2, 48))]
    starts = np.cumsum([0] + [n for _, n in parts])
    with ThreadPoolExecutor(8) as pool:  # more callers than requests: the rest wait for an idle one
        outs = list(pool.map(lambda p: clf.logits(images[starts[p[0]] : starts[p[0]] + p[1]]), parts))
    np.testing.assert_allclose(np.concatenate(outs), ort_logits, atol=1e-4, rtol=1e-3)
    with pytest.raises(CnnkitError, match="THROUGHPUT mode; use engine openvino"):
        EngineChoice(requests=2)
    with pytest.raises(CnnkitError, match="not both"):
        EngineChoice(engine="openvino", streams=2, requests=2)


@needs_openvino
def test_auto_gives_callers_with_batches_in_flight_the_choice_measured_that_way(model_copy):
    alone, in_flight = {1: EngineChoice()}, {1: EngineChoice(engine="openvino", requests=2)}
    plan.save(model_copy, alone, {}, in_flight)
    one = Classifier(model_copy, device="cpu")
    assert one.engine == "onnxruntime" and one.in_flight == 1  # a lone caller never gets a throughput route
    served = Classifier(model_copy, device="cpu", serving=True)
    assert served.engine == "openvino" and served.in_flight == 2
    plan.save(model_copy, alone, {})  # a record without the table: the one-caller choice for everyone
    assert Classifier(model_copy, device="cpu", serving=True).engine == "onnxruntime"


@needs_openvino
def test_a_server_with_requests_in_flight_answers_every_concurrent_client_right(onnx_file):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from helpers import start_server

    imgs = load_sample().test_images[:16, 0]
    want = Classifier(onnx_file, device="cpu", engine="onnxruntime").predict(imgs[:, None])
    proc, url = start_server(onnx_file, "--engine", "openvino", "--requests", "2", "--max-batch", "4")
    try:
        engines = httpx.get(url + "/v1/model").json()["engines"]
        assert engines[0]["requests"] == 2 and engines[0]["label"] == "openvino-2r"

        def ask(img):
            r = httpx.post(url + "/v1/predict", files={"file": ("x.png", png(img), "image/png")}, timeout=30)
            return r.status_code, r.json()["predictions"][0]["label"]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, imgs))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert answers == [(200, p.label) for p in want]
