"""The export side's parts on tiny inputs: the ONNX writer (metadata in, debug info out, an invalid graph refused,
nothing half-written), the Triton target rule, the runner interface. Small graphs made here, no trained model."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnkit import contract
from cnnkit.errors import CnnkitError
from cnnkit.export.formats import strip_debug_info, write_onnx
from cnnkit.export.runners import Runner, torch_runner
from cnnkit.export.triton_repo import MARKER, check_target


def _graph(valid: bool = True) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w" if valid else "missing"], ["y"])
    node.metadata_props.add(key="pkg.torch.onnx.stack_trace", value="/home/builder/secret/model.py:12")
    node.doc_string = "made at /home/builder"
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_write_onnx_puts_the_metadata_in_and_the_builders_paths_out(tmp_path):
    path = tmp_path / "m.onnx"
    opset = write_onnx(_graph(), {"model_version": "00000000abcd", "classes": ["a"]}, path)
    proto = onnx.load(str(path))
    assert opset == 18 and proto.model_version == 0xABCD
    assert [p.key for p in proto.metadata_props] == [contract.KEY]
    assert b"/home/builder" not in path.read_bytes()


def test_an_invalid_graph_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "bad.onnx"
    with pytest.raises(CnnkitError, match="the exported ONNX graph is invalid"):
        write_onnx(_graph(valid=False), {"model_version": "000000000001"}, path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_strip_debug_info_reaches_functions_too():
    proto = _graph()
    fn = helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])], [])
    fn.node[0].metadata_props.add(key="k", value="/home/builder")
    proto.functions.append(fn)
    strip_debug_info(proto)
    assert not proto.graph.node[0].metadata_props and not proto.functions[0].node[0].metadata_props


def test_a_triton_model_folder_cnnkit_did_not_write_is_refused(tmp_path):
    check_target(tmp_path, "new")  # nothing there: fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.pbtxt").write_text(MARKER + "\n")
    check_target(tmp_path, "mine")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "config.pbtxt").write_text('name: "theirs"\n')
    with pytest.raises(CnnkitError, match="was not written by cnnkit export"):
        check_target(tmp_path, "theirs")


def test_runners_infer_and_step_alike():
    import torch

    class Pixels(torch.nn.Module):  # what every exported module takes: uint8 pixels
        def forward(self, x):
            return x.float() / 255

    module = torch.nn.Sequential(Pixels(), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    runner = torch_runner("eager", module, torch.device("cpu"))
    x = np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2)
    out = runner.infer(x)
    assert out.shape == (2, 3) and out.dtype == np.float32
    runner.step(x)()  # a prepared step runs on the placed batch
    plain = Runner(name="fake", ran_on="x", infer=lambda a: np.zeros((len(a), 3), np.float32))
    assert plain.step(x)().shape == (2, 3)
