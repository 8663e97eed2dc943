"""Options objects refuse what cannot work when they are made, before any work; the one class-name rule."""

import pytest

from cnnkit.bench.options import BenchConfig, OptimizeOptions
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
        ({"backends": ("onnx-cudagraph",)}, DeviceError, "device='cpu': onnx-cudagraph run on CUDA only"),
        ({"batch_sizes": (0,)}, CnnkitError, "at least 1"),
    ],
)
def test_bench_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        BenchConfig(**kwargs)


def test_optimize_checks_the_target_batch_before_any_work():
    with pytest.raises(CnnkitError, match="target_batch=64: .*not among batch_sizes 1,8"):
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


def test_serve_configs_validate_themselves():
    from cnnkit.serve.config import ServeConfig, TritonEngineConfig

    for bad in ({"max_batch": 0}, {"request_timeout_s": float("nan")}, {"http": "quic"}, {"model_name": "../x"}):
        with pytest.raises(CnnkitError):
            ServeConfig(**bad)
    with pytest.raises(CnnkitError, match="ports must differ"):
        TritonEngineConfig(model="m.onnx", http_port=9000, grpc_port=9000)
    with pytest.raises(CnnkitError, match="device"):
        TritonEngineConfig(model="m.onnx", device="tpu")
    # a request may always hold one image of the largest size allowed
    assert ServeConfig(max_image_pixels=50_000_000).limits.max_request_pixels == 50_000_000


def test_the_serving_policy_is_the_librarys():
    import os

    from cnnkit.serve.config import ServeConfig, classifier_options, inference_threads

    opts = classifier_options(ServeConfig(max_batch=8, max_images=100))
    assert opts == {"intra_op_threads": max(1, (os.cpu_count() or 1) - 1), "max_batch": 100, "serving": True}
    assert inference_threads(3) == 3


def _cli_defaults(command) -> dict:
    return {p.name: p.default for p in command.params}


def test_cli_defaults_are_the_options_objects_defaults():
    from cnnkit.bench.options import BenchConfig, OptimizeOptions
    from cnnkit.cli.bench import bench, optimize
    from cnnkit.cli.export import export, verify
    from cnnkit.cli.serve import serve
    from cnnkit.export.compare import Gate
    from cnnkit.serve.config import ServeConfig

    s, g, b, o, e = ServeConfig(), Gate(), BenchConfig(), OptimizeOptions(), ExportOptions()
    d = _cli_defaults(serve)
    assert (d["max_batch"], d["max_images"], d["max_pixels"], d["read_timeout_s"], d["drain_s"], d["http"]) == (
        s.max_batch, s.max_images, s.max_image_pixels, s.request_timeout_s, s.drain_s, s.http)  # fmt: skip
    assert d["max_body_mb"] * 2**20 == s.max_body_bytes and d["max_inflight_mb"] * 2**20 == s.max_inflight_bytes
    assert d["head_timeout_s"] == s.head_timeout_s
    for command in (export, verify):
        d = _cli_defaults(command)
        assert (d["atol"], d["rtol"], d["min_agreement"], d["max_accuracy_drop"]) == (g.atol, g.rtol, g.min_agreement,
                                                                                      g.max_accuracy_drop)  # fmt: skip
    d = _cli_defaults(export)
    assert (d["calibration_images"], d["fold"], d["precision"]) == (e.calibration_images, e.fold, e.precision)
    d = _cli_defaults(bench)
    assert (d["min_time"], d["warmup"], d["batch_sizes"]) == (b.min_time, b.warmup, ",".join(map(str, b.batch_sizes)))
    d = _cli_defaults(optimize)
    assert (d["min_time"], d["target_batch"]) == (o.min_time, o.target_batch)


def test_library_errors_name_parameters_and_the_cli_says_flags(tmp_path):
    from click.testing import CliRunner

    from cnnkit.cli import main

    with pytest.raises(CnnkitError) as info:
        ExportOptions(opset=17)
    assert str(info.value).startswith("opset=17: ") and "--" not in str(info.value)
    with pytest.raises(DeviceError) as info:
        BenchConfig(backends=("openvino",), device="cuda")
    assert str(info.value) == "device='cuda': openvino run on the CPU only"
    r = CliRunner().invoke(main, ["bench", str(tmp_path), "--backends", "openvino", "--device", "cuda"])
    assert r.exit_code == 1 and r.stderr == "Error: --device cuda: openvino run on the CPU only\n"


def test_formats_for_and_row_names():
    from cnnkit.bench.options import row_name
    from cnnkit.export.options import formats_for

    assert formats_for("all") == ("onnx", "torchscript", "exported") and formats_for("all", "int8") == ("onnx",)
    assert formats_for("aoti") == ("aoti",)  # asked for by name: it compiles for a minute
    assert formats_for("triton") == ("onnx", "torchscript") and formats_for("torchscript") == ("torchscript",)
    assert formats_for("triton", "int8") == ("onnx",)  # a repository's reduced-precision model is its ONNX file
    with pytest.raises(CnnkitError, match="format='tflite'"):
        formats_for("tflite")
    assert row_name("onnx") == "onnx" and row_name("openvino-2s", "int8-folded") == "openvino-2s:int8-folded"
