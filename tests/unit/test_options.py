"""Options objects refuse what cannot work when they are made, before any work; the one class-name rule."""

import pytest

from cnnkit.bench.optimize import OptimizeOptions
from cnnkit.bench.run import BenchConfig
from cnnkit.errors import CheckpointError, CnnkitError, DeviceError
from cnnkit.export.exporter import ExportOptions
from cnnkit.spec import ModelConfig, class_names_problem
from cnnkit.triton_config import TritonOptions


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"precision": "int4"}, "unknown precision"),
        ({"precision": "int8", "formats": ("onnx", "torchscript")}, "ONNX only"),
        ({"formats": ("tflite",)}, "expected some of"),
        ({"formats": ()}, "expected some of"),
        ({"calibration_images": 0}, "at least 1 image"),
        ({"opset": 17}, "opset 18 or later"),
    ],
)
def test_export_options(kwargs, match):
    with pytest.raises(CnnkitError, match=match):
        ExportOptions(**kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"backends": ("eager", "tensorrt")}, CnnkitError, "unknown backend"),
        ({"device": "auto"}, DeviceError, "expected cpu or cuda"),
        ({"backends": ("onnx-cudagraph",)}, DeviceError, "need --device cuda"),
        ({"batch_sizes": (0,)}, CnnkitError, "at least 1"),
    ],
)
def test_bench_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        BenchConfig(**kwargs)


def test_optimize_checks_the_target_batch_before_any_work():
    with pytest.raises(CnnkitError, match="--target-batch 64.*not among --batch-sizes 1,8"):
        OptimizeOptions(batch_sizes=(1, 8), select=True, target_batch=64)
    assert OptimizeOptions(batch_sizes=(1, 8), target_batch=64).device == "cpu"  # not selecting: no constraint


def test_triton_options():
    with pytest.raises(CnnkitError, match="preferred batch sizes"):
        TritonOptions(max_batch_size=8, preferred_batch_sizes=(16,))
    with pytest.raises(CnnkitError, match="model name"):
        TritonOptions(model_name="../escape")


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        ExportOptions(("onnx",))  # type: ignore[misc]


@pytest.mark.parametrize(
    "names,problem",
    [
        (["a", "b"], None),
        ([], "non-empty"),
        (["a", " "], "class 1 has an empty name"),
        (["a", "x" * 65], "65 characters"),
        (["a", "\x1b[2J"], "control characters"),
        (["a", "b", "a"], "repeat: a"),
        ("ab", "non-empty list"),
    ],
)
def test_one_class_name_rule(names, problem):
    got = class_names_problem(names)
    assert got is None if problem is None else problem in got


@pytest.mark.parametrize(
    "field,value",
    [("hidden", 10**9), ("kernel_size", 4), ("image_size", 30), ("dropout", True), ("conv1_channels", 2.0)],
)
def test_model_config_bounds(field, value):
    with pytest.raises(CheckpointError):
        ModelConfig.from_dict({**ModelConfig().to_dict(), field: value})
