"""Reduced precision on a tiny conv graph made here (uint8 in, a normalisation prologue, conv, gemm): INT8 keeps the
prologue and the output in fp32 and stays close; fp16 keeps uint8 in and float32 out; the node sort refuses a
cycle. No trained model."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnkit.errors import CnnkitError
from cnnkit.export.precision import Calibration, _sort_nodes, convert_fp16, quantize_int8


def _tiny() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), "cw"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), "cw2"),
        numpy_helper.from_array(rng.normal(0, 0.3, (3, 4 * 8 * 8)).astype(np.float32), "gw"),
    ]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["f", "scale"], ["x"]),
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r1"]),
        helper.make_node("Conv", ["r1", "cw2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r"]),
        helper.make_node("Flatten", ["r"], ["fl"]),
        helper.make_node("Gemm", ["fl", "gw"], ["logits"], transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"images": x})[0]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)


def test_int8_quantizes_the_body_keeps_the_prologue_and_output_fp32_and_stays_close(images):
    fp32 = _tiny()
    q = quantize_int8(fp32, Calibration(images=images, dataset="made here", seed=0), "images")
    by_op = {n.op_type: n for n in q.graph.node}
    assert "QuantizeLinear" in by_op
    assert list(by_op["Cast"].input) == ["images"] and by_op["Div"].input[0] == by_op["Cast"].output[0]  # as it was
    producer = next(n for n in q.graph.node if "logits" in n.output)
    assert producer.op_type == "Gemm"  # the output layer is left in fp32
    first, second = [n for n in q.graph.node if n.op_type == "Conv"]
    made_by = {o: n.op_type for n in q.graph.node for o in n.output}
    assert made_by[first.input[0]] == "Div" and made_by[second.input[0]] == "DequantizeLinear"  # first conv fp32
    ref, out = _run(fp32, images), _run(q, images)
    assert out.dtype == np.float32 and np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.95  # the same function


def test_fp16_keeps_uint8_in_and_float32_out(images):
    half = convert_fp16(_tiny())
    onnx.checker.check_model(half)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    np.testing.assert_allclose(_run(half, images), _run(_tiny(), images), atol=0.02)


def test_the_node_sort_orders_a_shuffled_graph_and_refuses_a_cycle():
    proto = _tiny()
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))
    _sort_nodes(proto.graph)
    assert [n.op_type for n in proto.graph.node] == [n.op_type for n in nodes]
    cyclic = helper.make_graph(
        [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])], "c", [], []
    )
    with pytest.raises(CnnkitError, match="cycle"):
        _sort_nodes(cyclic)
