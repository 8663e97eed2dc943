"""The KServe V2 (Open Inference Protocol) endpoints of `cnnkit serve`, driven by the real client, tritonclient."""

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from cnnkit.data.datasets import load_sample
from cnnkit.runtime import Classifier
from helpers import v2_binary_header

NAME = "cnnkit-mnist-sample"  # the serving name of a model trained on the bundled sample


@pytest.fixture(scope="module")
def client(server):
    c = th.InferenceServerClient(server.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def clf(exported):
    return Classifier(exported.artefacts["onnx"], device="cpu")


def infer(client, x, binary: bool, class_count: int = 0, name: str = NAME):
    i = th.InferInput("images", list(x.shape), "UINT8")
    i.set_data_from_numpy(x, binary_data=binary)
    out = th.InferRequestedOutput("logits", binary_data=binary, class_count=class_count)
    return client.infer(name, [i], outputs=[out])


def test_health_and_metadata(client, clf):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    server = client.get_server_metadata()
    assert server["name"] == "cnnkit" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(NAME)
    assert meta["versions"] == [clf.info.version]
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_metadata(NAME, model_version=clf.info.version)["name"] == NAME


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_the_runtime(client, clf, binary):
    x = load_sample().test_images[:5].reshape(5, 1, 28, 28)
    got = infer(client, x, binary).as_numpy("logits")
    assert got.dtype == np.float32 and got.shape == (5, 10)
    np.testing.assert_allclose(got, clf.logits(x), rtol=1e-5, atol=1e-5)
    # the client's default: no outputs named, binary_data_output in the request
    i = th.InferInput("images", [5, 1, 28, 28], "UINT8")
    i.set_data_from_numpy(x, binary_data=binary)
    np.testing.assert_allclose(client.infer(NAME, [i]).as_numpy("logits"), got, rtol=1e-6, atol=1e-6)


def test_classification_extension_names_the_classes(client, clf):
    x = load_sample().test_images[:3].reshape(3, 1, 28, 28)
    for binary in (True, False):
        top = infer(client, x, binary, class_count=2).as_numpy("logits")
        assert top.shape == (3, 2)
        rows = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in top]  # JSON gives str
        first = [int(row[0].split(":")[1]) for row in rows]
        assert first == clf.logits(x).argmax(1).tolist()
        assert rows[0][0].split(":")[2] == clf.classes[first[0]]


def test_client_mistakes_are_400_with_the_protocol_error_body(client, server):
    x = np.zeros((1, 1, 28, 28), np.uint8)
    with pytest.raises(InferenceServerException, match="unknown model 'other'") as e:
        infer(client, x, True, name="other")
    assert e.value.status() == "400"
    for shape in ([1, 1, 28, 27], [1, 28, 28], [0, 1, 28, 28], [9, 1, 28, 28]):
        doc = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": shape, "data": [0] * int(np.prod(shape))}]}
        r = httpx.post(f"{server}/v2/models/{NAME}/infer", json=doc)
        assert r.status_code == 400 and "error" in r.json(), (shape, r.text)
    bad = [
        ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 1, 28, 28], "data": [0] * 784}]}, "unknown input"),
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0] * 784}]}, "FP32"),
        ({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 28, 28], "data": [0] * 783}]}, "784"),
        ({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 28, 28], "data": [300] * 784}]}, "0..255"),
        ({"inputs": []}, "one input"),
        ({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1e400, 1, 28, 28], "data": []}]}, "integer"),
    ]
    for doc, match in bad:
        r = httpx.post(f"{server}/v2/models/{NAME}/infer", content=json.dumps(doc))
        assert r.status_code == 400 and match in r.json()["error"], (match, r.text)
    header = v2_binary_header()
    for body, length in ((header + b"\0" * 700, str(len(header))), (header, "99999"), (b"[" * 5000, "5000")):
        r = httpx.post(
            f"{server}/v2/models/{NAME}/infer", content=body, headers={"Inference-Header-Content-Length": length}
        )
        assert r.status_code == 400 and r.json()["error"], r.text
    assert httpx.get(f"{server}/v2/models/other/ready").status_code == 400
    assert client.is_server_live()  # and the server is still up


def test_tritons_client_tools_get_config_index_and_statistics(client, clf):
    """What perf_analyzer and tritonclient ask for beyond the core protocol, in Triton's own schema."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = client.get_model_config(NAME)
    parsed = json_format.ParseDict(config, mc.ModelConfig(), ignore_unknown_fields=False)
    assert parsed.name == NAME and parsed.platform == "onnxruntime_onnx" and parsed.max_batch_size == 16
    (inp,) = parsed.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("images", mc.TYPE_UINT8, [1, 28, 28])
    (out,) = parsed.output
    assert (out.name, out.data_type, list(out.dims)) == ("logits", mc.TYPE_FP32, [10])
    assert client.get_model_repository_index() == [
        {"name": NAME, "version": clf.info.version, "state": "READY", "reason": ""}
    ]

    before = client.get_inference_statistics(NAME)["model_stats"][0]
    x = np.zeros((3, 1, 28, 28), np.uint8)
    infer(client, x, binary=True)
    after = client.get_inference_statistics(NAME)["model_stats"][0]
    assert after["name"] == NAME and after["version"] == clf.info.version
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 1
    assert client.get_inference_statistics()["model_stats"][0]["name"] == NAME  # all models: this one
    with pytest.raises(InferenceServerException):
        client.get_model_config("other")
