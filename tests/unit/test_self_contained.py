"""The self-contained rule for .onnx files: a tensor with external data anywhere a tensor can live is found."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnkit.errors import ModelFileError
from cnnkit.runtime import self_contained


def _external(name: str) -> TensorProto:
    t = numpy_helper.from_array(np.ones(4, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="secret.bin")
    return t


def _model(initializers=(), nodes=(), sparse=()) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    nodes = list(nodes) or [helper.make_node("Identity", ["x"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [y], list(initializers), sparse_initializer=list(sparse))
    return helper.make_model(g).SerializeToString()


def test_a_self_contained_model_passes():
    self_contained.check(_model([numpy_helper.from_array(np.ones(4, np.float32), "w")]), "m")


def test_an_external_initializer_is_named():
    with pytest.raises(ModelFileError, match="tensor 'w' keeps its data in an external file"):
        self_contained.check(_model([_external("w")]), "m")


def test_external_data_inside_a_subgraph_constant_is_found():
    inner = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=_external("deep"))],
        "inner",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])],
    )
    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "t"))
    branch = helper.make_node("If", ["cond"], ["y"], then_branch=inner, else_branch=inner)
    with pytest.raises(ModelFileError, match="'deep'"):
        self_contained.check(_model(nodes=[cond, branch]), "m")


def test_external_data_in_a_sparse_initializer_is_found():
    sparse = helper.make_sparse_tensor(_external("values"), numpy_helper.from_array(np.array([0], np.int64)), [4])
    with pytest.raises(ModelFileError, match="'values'"):
        self_contained.check(_model(sparse=[sparse]), "m")


@pytest.mark.parametrize("data", [b"\xff\xff\xff not onnx at all", b"\x0a\xff\xff\xff\xff\x0f", b"\x3a\x05ab"])
def test_bytes_that_are_not_protobuf_are_one_line(data):
    with pytest.raises(ModelFileError, match="not an ONNX model file"):
        self_contained.check(data, "m")


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand (onnx's own parser refuses such depth)."""

    def varint(v: int) -> bytes:
        out = b""
        while v >= 0x80:
            out, v = out + bytes([v & 0x7F | 0x80]), v >> 7
        return out + bytes([v])

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_nesting_beyond_the_bound_is_refused_not_recursed():
    graph = b""
    for _ in range(self_contained.MAX_DEPTH):  # graph.node.attribute.g, again and again
        graph = _field(1, _field(5, _field(6, graph)))
    with pytest.raises(ModelFileError, match="nested deeper"):
        self_contained.check(_field(7, graph), "m")


def test_a_zip_archive_is_named_for_what_it_likely_is():
    with pytest.raises(ModelFileError, match="zip archive .*TorchScript"):
        self_contained.check(b"PK\x03\x04" + b"\0" * 30, "model.ts")


def test_a_metadata_key_given_twice_is_refused():
    from onnx import load_from_string

    proto = load_from_string(_model())
    proto.metadata_props.add(key="cnnkit", value='{"classes": ["a"]}')
    proto.metadata_props.add(key="cnnkit", value='{"classes": ["b"]}')
    with pytest.raises(ModelFileError, match="metadata key 'cnnkit' appears 2 times"):
        self_contained.check(proto.SerializeToString(), "m")
