"""The KServe V2 request parser and response encoder, with a stand-in model (no session, no server)."""

import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from cnnkit.errors import RequestError
from cnnkit.runtime.inputs import InputSpec
from cnnkit.serve import v2

CLF = SimpleNamespace(
    input_spec=InputSpec(name="images", channels=1, height=2, width=2),
    info=SimpleNamespace(output_name="logits", num_classes=3, classes=("cat", "dog", "eel"), version="v1"),
)


def request(data=None, shape=(1, 1, 2, 2), datatype="UINT8", **extra) -> dict:
    tensor = {"name": "images", "datatype": datatype, "shape": list(shape)}
    if data is not None:
        tensor["data"] = data
    return {"inputs": [tensor], **extra}


def parse(doc, header_length=None, tail=b"", max_images=4):
    return v2.parse_infer(json.dumps(doc).encode() + tail, header_length, CLF, max_images)


def test_json_data_flat_or_nested_becomes_the_uint8_batch():
    flat = parse(request([0, 1, 2, 255]))
    nested = parse(request([[[[0, 1], [2, 255]]]]))
    for req in (flat, nested):
        assert req.images.dtype == np.uint8 and req.images.tolist() == [[[[0, 1], [2, 255]]]]
        assert [(o.name, o.binary, o.classification) for o in req.outputs] == [("logits", False, 0)]


def test_binary_tensor_data_after_the_json_header():
    doc = request(shape=(2, 1, 2, 2))
    doc["inputs"][0]["parameters"] = {"binary_data_size": 8}
    header = json.dumps(doc).encode()
    req = v2.parse_infer(header + bytes(range(8)), str(len(header)), CLF, 4)
    assert req.images.shape == (2, 1, 2, 2) and req.images.reshape(-1).tolist() == list(range(8))


@pytest.mark.parametrize(
    "doc,match",
    [
        (request([0, 1, 2]), "4 integers"),
        (request([0, 1, 2, 256]), "outside 0..255"),
        (request([0.5, 1, 2, 3]), "integers"),
        (request([0, 1, 2, 3], datatype="FP32"), "expected 'UINT8'"),
        (request([0, 1, 2, 3], shape=(1, 1, 3, 3)), "expected \\[N, 1, 2, 2\\]"),
        (request([0] * 20, shape=(5, 1, 2, 2)), "batch dimension"),
        ({"inputs": []}, "one input tensor"),
        (request([0, 1, 2, 3], outputs=[{"name": "probs"}]), "unknown output"),
        (request([0, 1, 2, 3], outputs=[{"name": "logits", "parameters": {"classification": 4}}]), "classification"),
        ([1, 2], "JSON object"),
        (request([0, 1, 2, 3], id="é" * 257), "id must be a string of at most 256"),  # echoed: bounded
        (request([0, 1, 2, 3], id=["x"]), "id must be a string"),
    ],
)
def test_what_the_protocol_refuses_is_a_400_naming_it(doc, match):
    with pytest.raises(RequestError, match=match) as err:
        parse(doc)
    assert err.value.status == 400


def test_header_length_must_be_a_length_within_the_body():
    for bad in ("abc", "٣", "99999"):  # not digits, a Unicode digit, past the end
        with pytest.raises(RequestError, match="Inference-Header-Content-Length"):
            parse(request([0, 1, 2, 3]), header_length=bad)


def test_binary_size_must_match_the_tensor():
    doc = request()
    doc["inputs"][0]["parameters"] = {"binary_data_size": 3}
    header = json.dumps(doc).encode()
    with pytest.raises(RequestError, match="binary data of 3 bytes"):
        v2.parse_infer(header + b"abc", str(len(header)), CLF, 4)


def test_response_json_and_classification_with_labels():
    req = parse(request([0, 1, 2, 3], id="r1", outputs=[{"name": "logits", "parameters": {"classification": 2}}]))
    logits = np.array([[0.5, 2.0, -1.0]], np.float32)
    body, headers = v2.response(req, logits, CLF, "digits")
    doc = json.loads(body)
    assert headers == {"content-type": "application/json"} and doc["id"] == "r1" and doc["model_name"] == "digits"
    assert doc["outputs"][0]["data"] == ["2.000000:1:dog", "0.500000:0:cat"]  # Triton's "score:index:label"


def test_binary_response_puts_the_logits_after_the_header():
    req = parse(request([0, 1, 2, 3], parameters={"binary_data_output": True}))
    logits = np.array([[0.5, 2.0, -1.0]], np.float32)
    body, headers = v2.response(req, logits, CLF, "digits")
    split = int(headers[v2.HEADER_LENGTH])
    entry = json.loads(body[:split])["outputs"][0]
    assert entry["parameters"] == {"binary_data_size": 12} and "data" not in entry
    assert struct.unpack("<3f", body[split:]) == (0.5, 2.0, -1.0)
