"""What an .onnx file must be before any engine reads it: it holds all of its tensors itself (one that points at
external data is refused), and no metadata key twice. Pure Python (no onnx, no protobuf descriptors): a walk of
the protobuf wire format over just the messages that can hold a tensor.

Why: both engines are handed the model as bytes, so a relative external-data `location` would be resolved against
the process's working directory, not the model's folder; a crafted model could then read any file the server can
and hand its bytes back as "logits". cnnkit never writes external data, so refusing it loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cnnkit.errors import ModelFileError

MAX_DEPTH = 64  # graphs nest inside node attributes (If, Loop, Scan); protobuf's own default limit is 100

# field numbers of onnx.proto that lead to a TensorProto, per message kind
_TENSOR, _GRAPH, _NODE, _ATTR, _FUNC, _SPARSE, _TRAINING = range(7)
_CHILDREN: dict[int, dict[int, int]] = {
    -1: {7: _GRAPH, 20: _TRAINING, 25: _FUNC},  # ModelProto: graph, training_info, functions
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _NODE: {5: _ATTR},  # attribute
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},  # t, g, tensors, graphs, ...
    _FUNC: {7: _NODE},  # node
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
    _TRAINING: {1: _GRAPH, 2: _GRAPH},  # initialization, algorithm
    _TENSOR: {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _TENSOR_NAME = 13, 14, 8
_MODEL_METADATA = 14


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value or (start, end) of a length-delimited payload) of one message."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed("a field runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Malformed("a fixed-size field runs past the end of its message")
        else:  # groups (3, 4) are not used by onnx.proto; anything else is not protobuf
            raise _Malformed(f"wire type {wire}")


def _external_tensor(buf: memoryview, pos: int, end: int, kind: int, depth: int) -> str | None:
    """The name of the first tensor under this message that keeps its data outside the file, else None."""
    if depth > MAX_DEPTH:
        raise _Malformed(f"messages nested deeper than {MAX_DEPTH}")
    name = ""
    external = False
    for number, wire, value in _fields(buf, pos, end):
        if kind == _TENSOR:
            if number == _TENSOR_NAME and wire == 2:
                start, stop = value
                name = bytes(buf[start:stop][:200]).decode("utf-8", "replace")
            elif number == _TENSOR_EXTERNAL_DATA or (number == _TENSOR_DATA_LOCATION and value != 0):
                external = True
            continue
        child = _CHILDREN[kind].get(number)
        if child is not None and wire == 2:
            start, stop = value
            found = _external_tensor(buf, start, stop, child, depth + 1)
            if found is not None:
                return found
    return (name or "<unnamed>") if external else None


def _metadata_keys(buf: memoryview) -> list[str]:
    """The keys of the model's metadata_props (ModelProto field 14, StringStringEntryProto key = 1), in order."""
    keys = []
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == _MODEL_METADATA and wire == 2:
            for n, w, v in _fields(buf, *value):
                if n == 1 and w == 2:
                    keys.append(bytes(buf[v[0] : v[1]][:200]).decode("utf-8", "replace"))
    return keys


def check(data: bytes, source: str) -> None:
    """Refuse (ModelFileError) a model that keeps any tensor's data outside the file, or that is not protobuf."""
    if data[:4] == b"PK\x03\x04":
        raise ModelFileError(
            f"{source}: a zip archive (a TorchScript .ts, a .pt2 or a .pt file?), not an ONNX model; "
            "this runs .onnx files (cnnkit export writes one)"
        )
    buf = memoryview(data)
    try:
        tensor = _external_tensor(buf, 0, len(buf), -1, 0)
    except _Malformed as exc:
        raise ModelFileError(f"{source}: not an ONNX model file (its protobuf encoding is broken: {exc})") from None
    keys = _metadata_keys(buf)
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:  # engines disagree on which one wins: one engine would read other labels than the next
        raise ModelFileError(f"{source}: metadata key {repeated[0]!r} appears {keys.count(repeated[0])} times")
    if tensor is not None:
        raise ModelFileError(
            f"{source}: tensor {tensor!r} keeps its data in an external file; cnnkit loads only self-contained "
            "ONNX files (re-save it with onnx.save_model(model, path, save_as_external_data=False))"
        )
