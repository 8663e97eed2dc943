"""The Open Inference Protocol (KServe V2) over REST, beside cnnkit's own API, on the same dynamic batcher.

    GET  /v2/health/live, /v2/health/ready, /v2
    GET  /v2/models/{name}[/versions/{version}], .../ready
    POST /v2/models/{name}[/versions/{version}]/infer

Tensors come as JSON (`data`, row-major, flat or nested) or with the binary tensor data extension: a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw tensors (`parameters.binary_data_size` each), which is
what `tritonclient.http` sends by default. Outputs are returned as JSON or binary (`binary_data`, or the request's
`binary_data_output`), and the classification extension (`parameters.classification: k`) returns "score:index:label"
strings as Triton does. Every client mistake is a 400 with the protocol's `{"error": "..."}` body.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit import __version__
from cnnkit.errors import RequestError
from cnnkit.runtime import Classifier
from cnnkit.serve.elements import flat_numbers

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_ID_CHARS = 256
EXTENSIONS = ["binary_tensor_data", "classification"]
DTYPES = {"UINT8": np.uint8, "FP32": np.float32, "BYTES": np.object_}


@dataclass(frozen=True, kw_only=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int  # 0: the logits themselves


@dataclass(frozen=True, kw_only=True)
class InferRequest:
    id: str | None
    images: np.ndarray  # uint8 [N, C, H, W]
    outputs: list[RequestedOutput]


def server_metadata() -> dict[str, Any]:
    return {"name": "cnnkit", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(clf: Classifier, name: str) -> dict[str, Any]:
    spec = clf.input_spec
    return {
        "name": name,
        "versions": [clf.info.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": spec.name, "datatype": "UINT8", "shape": [-1, *spec.image_shape]}],
        "outputs": [{"name": clf.info.output_name, "datatype": "FP32", "shape": [-1, clf.info.num_classes]}],
    }


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object")
    return value


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = f"a {type(value).__name__}" if isinstance(value, (list, dict)) else str(value)[:40]
        raise RequestError(f"{what} must be an integer in {low}..{high}, got {shown}")
    return value


def request_bytes(clf: Classifier, cfg: Any, per_value: int) -> int:
    """The most bytes a request needs for `max_images` images at `per_value` bytes a value, plus 64 KB for the rest,
    or the body limit if smaller: the size rule of encodings that hold the GIL while parsed (all-JSON bodies over
    HTTP: up to 6 characters a value, "255, " and nesting; gRPC typed contents: a varint of up to 5 bytes)."""
    return int(min(cfg.max_body_bytes, cfg.max_images * int(np.prod(clf.input_spec.image_shape)) * per_value + 65536))


def json_limit(clf: Classifier, cfg: Any) -> int:
    """The largest all-JSON infer body accepted (parsing JSON holds the GIL)."""
    return request_bytes(clf, cfg, 6)


def input_shape(tensor: dict[str, Any], clf: Classifier, max_images: int) -> tuple[list[int], int]:
    """The input tensor's shape and element count, checked against the model (name, UINT8, [N, C, H, W] with N at
    most `max_images`): the one rule for V2 over HTTP and gRPC."""
    spec = clf.input_spec
    if tensor.get("name") != spec.name:
        raise RequestError(f"unknown input {str(tensor.get('name'))[:40]!r}; this model's input is {spec.name!r}")
    if tensor.get("datatype") != "UINT8":
        raise RequestError(f"input {spec.name!r} has datatype {str(tensor.get('datatype'))[:20]!r}; expected 'UINT8'")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or len(shape) != 4:
        raise RequestError(f"input shape {str(shape)[:60]}; expected [N, {', '.join(map(str, spec.image_shape))}]")
    n = _int(shape[0], "the batch dimension", 1, max_images)
    if [_int(d, "a dimension", 0, 1 << 20) for d in shape[1:]] != list(spec.image_shape):
        raise RequestError(f"input shape {shape}; expected [N, {', '.join(map(str, spec.image_shape))}]")
    return shape, n * int(np.prod(spec.image_shape))


def request_id(rid: Any) -> str | None:
    """The request's id, echoed in its answer: a string of at most MAX_ID_CHARS, or None."""
    if rid is not None and (not isinstance(rid, str) or len(rid) > MAX_ID_CHARS):
        raise RequestError(f"id must be a string of at most {MAX_ID_CHARS} characters (it is echoed in the answer)")
    return rid


def parse_infer(body: bytes, header_length: str | None, clf: Classifier, max_images: int) -> InferRequest:
    """An infer request body -> the uint8 batch and the outputs asked for; RequestError naming what is wrong."""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise RequestError(
                f"{HEADER_LENGTH} {header_length[:20]!r} is not a length within the {len(body)}-byte body"
            )
        split = int(header_length)
        header, binary = body[:split], body[split:]
    else:
        header, binary = body, b""
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RequestError(f"invalid JSON in the inference header: {str(exc)[:120]}") from None
    doc = _obj(doc, "the inference request")
    params = _obj(doc.get("parameters") or {}, "parameters")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise RequestError(f'"inputs" must be a list holding the one input tensor "{clf.input_spec.name}"')
    tensor = _obj(inputs[0], "inputs[0]")
    shape, count = input_shape(tensor, clf, max_images)
    tparams = _obj(tensor.get("parameters") or {}, "inputs[0].parameters")
    if "binary_data_size" in tparams:
        size = _int(tparams["binary_data_size"], "binary_data_size", 0, len(binary))
        if size != count or len(binary) != size:
            raise RequestError(
                f"binary data of {len(binary)} bytes (binary_data_size {size}) for a UINT8 tensor of {count} elements"
            )
        images = np.frombuffer(binary, dtype=np.uint8).reshape(shape)
    else:
        if binary:
            raise RequestError("binary data after the header, but the input has no binary_data_size")
        images = _json_tensor(tensor.get("data"), shape, count)
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise RequestError("parameters.binary_data_output must be true or false")
    outputs = outputs_asked(doc.get("outputs"), clf, binary_default)
    return InferRequest(id=request_id(doc.get("id")), images=images, outputs=outputs)


def _json_tensor(data: Any, shape: list[int], count: int) -> np.ndarray:
    """`data` (flat or nested) as the uint8 tensor of `shape`: exactly `count` integers 0..255, checked element by
    element before any array is built."""
    if data is None:
        raise RequestError('input has neither "data" nor binary_data_size')
    values = flat_numbers(data, count, len(shape), "input data")
    if len(values) != count:
        raise RequestError(f"input data must be {count} integers 0..255 for shape {shape}, got {len(values)}")
    arr = np.array(values, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise RequestError("UINT8 input data outside 0..255")
    return arr.astype(np.uint8).reshape(shape)


def outputs_asked(requested: Any, clf: Classifier, binary_default: bool) -> list[RequestedOutput]:
    """The outputs asked for: each of the model's outputs at most once (it has one), else a 400."""
    name = clf.info.output_name
    if requested is None:
        return [RequestedOutput(name=name, binary=binary_default, classification=0)]
    if not isinstance(requested, list) or not requested:
        raise RequestError('"outputs" must be a non-empty list')
    if len(requested) > 1:
        raise RequestError(f'"outputs" names {len(requested)} outputs; this model has one, {name!r}: ask for it once')
    item = _obj(requested[0], "outputs[0]")
    if item.get("name") != name:
        raise RequestError(f"unknown output {str(item.get('name'))[:40]!r}; this model's output is {name!r}")
    p = _obj(item.get("parameters") or {}, "outputs[0].parameters")
    k = _int(p.get("classification", 0), "classification", 0, clf.info.num_classes)
    binary = p.get("binary_data", binary_default)
    if not isinstance(binary, bool):
        raise RequestError("outputs[0].parameters.binary_data must be true or false")
    return [RequestedOutput(name=name, binary=binary, classification=k)]


def _classification(logits: np.ndarray, k: int, classes: tuple[str, ...]) -> np.ndarray:
    """Triton's classification extension: the top k as "score:index:label" (score = the logit, as Triton gives)."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return np.array(
        [[f"{logits[r, i]:f}:{i}:{classes[i]}".encode() for i in row] for r, row in enumerate(top)], dtype=np.object_
    )


def _bytes_tensor(arr: np.ndarray) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in arr.reshape(-1))


def encoded(out: RequestedOutput, logits: np.ndarray, clf: Classifier) -> tuple[str, np.ndarray, bytes]:
    """One output asked for: its datatype, its array and its raw little-endian bytes (BYTES: length-prefixed)."""
    if out.classification:
        arr = _classification(logits, out.classification, clf.info.classes)
        return "BYTES", arr, _bytes_tensor(arr)
    arr = np.ascontiguousarray(logits, dtype=np.float32)
    return "FP32", arr, arr.tobytes()


def response(req: InferRequest, logits: np.ndarray, clf: Classifier, name: str) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or a JSON header plus binary tensors when any output asked for it."""
    outputs, blobs = [], []
    for out in req.outputs:
        dtype, arr, raw = encoded(out, logits, clf)
        data: Any = [v.decode() for v in arr.reshape(-1)] if dtype == "BYTES" else arr.reshape(-1).tolist()
        entry: dict[str, Any] = {"name": out.name, "datatype": dtype, "shape": list(arr.shape)}
        if out.binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = data
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": name, "model_version": clf.info.version, "outputs": outputs}
    if req.id is not None:
        doc["id"] = req.id
    header = json.dumps(doc, allow_nan=False).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
