"""ONNX Runtime's CUDA provider: library discovery, log reading, the device-input check (all runnable on a CPU)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from cnnkit.runtime import CUDA_EP, cuda_libs
from cnnkit.runtime.cuda import device_input_problem

# Verbatim shape of what onnxruntime-gpu 1.31.1 logs when its CUDA provider cannot load (ANSI colours included).
FAILED_LOG = (
    "\x1b[0;93m2026-11-27 11:31:03.843725624 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:856 operator()] "
    "No registered plugin EP device found for 'CUDAExecutionProvider' with device_id=0\x1b[m\n"
    "\x1b[1;31m2026-11-27 11:31:03.845224223 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& "
    "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
    "/x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: "
    "No such file or directory\n\x1b[m\n"
    "\x1b[0;93m2026-11-27 11:31:03.845262926 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 "
    "CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and "
    "CUDA 13.*.\x1b[m\n"
    "some other line\n"
)


def test_ort_error_names_the_missing_library_without_colour_or_prefix():
    err = cuda_libs.ort_error(FAILED_LOG)
    assert err == (
        "Failed to load library /x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: "
        "cannot open shared object file: No such file or directory"
    )
    assert cuda_libs.ort_error("[W:onnxruntime:Default, a.cc:1 f] only a warning") is None


def test_passthrough_drops_plugin_ep_notice_and_reported_failure():
    shown = cuda_libs.passthrough(FAILED_LOG, fell_back=True)
    assert shown == "some other line\n"
    shown = cuda_libs.passthrough(FAILED_LOG, fell_back=False)
    assert "plugin EP" not in shown and "libcublasLt" in shown and "some other line" in shown


@pytest.mark.skipif(CUDA_EP not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_real_cuda_session_log_is_read(tmp_path):
    """A real CUDA session request: on a machine without a GPU its [E:] line is what doctor reports."""
    from cnnkit.doctor import probe_model
    from cnnkit.runtime.session import cuda_provider_options

    with cuda_libs.capture_stderr_fd() as log:
        s = ort.InferenceSession(probe_model(), providers=[(CUDA_EP, cuda_provider_options()), "CPUExecutionProvider"])
    if CUDA_EP in s.get_providers():
        pytest.skip("the CUDA provider loaded here")
    assert "Failed to load library" in (cuda_libs.ort_error(log.text) or "")
    assert "No registered plugin EP" not in cuda_libs.passthrough(log.text, fell_back=True)


def test_nvidia_lib_dirs_searches_every_path_entry(tmp_path, monkeypatch):
    lib = tmp_path / "nvidia" / "cu99" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcublas.so.99").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in sys.modules if m == "nvidia" or m.startswith("nvidia.")]:
        monkeypatch.delitem(sys.modules, mod)
    assert lib in cuda_libs.nvidia_lib_dirs()


def test_doctor_json_stdout_is_pure_json_in_a_fresh_process():
    """preload_dlls prints to stdout when it misses a library: that must never reach `doctor --json`."""
    r = subprocess.run([sys.executable, "-m", "cnnkit", "doctor", "--json"], capture_output=True, text=True)
    report = json.loads(r.stdout)
    assert "plugin EP" not in r.stderr
    if report["cuda_session"]["attempted"] and not report["cuda_session"]["ok"]:
        err = report["cuda_session"]["error"]
        assert "\x1b" not in err and "[W:" not in err and "plugin EP" not in err


@pytest.mark.parametrize(
    "array,expect",
    [
        (np.zeros((2, 1, 28, 28), np.uint8), "got uint8 [2, 1, 28, 28] on cpu"),
        (np.zeros((2, 1, 28, 28), np.float32), "got float [2, 1, 28, 28] on cpu"),
        (np.zeros((2, 28, 28), np.uint8), "got uint8 [2, 28, 28] on cpu"),
    ],
)
def test_device_input_check_names_dtype_shape_and_device(array, expect):
    value = ort.OrtValue.ortvalue_from_numpy(array)
    problem = device_input_problem(value, (1, 28, 28))
    assert problem.startswith("device input must be a CUDA uint8 tensor [N, 1, 28, 28]") and expect in problem


def test_classifier_records_which_provider_runs_each_node(exported):
    from cnnkit.runtime import Classifier

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = Classifier(exported.artefacts["onnx"], device="cpu")
    nodes = clf.node_assignment
    assert nodes is not None and set(nodes) == {"CPUExecutionProvider"}
    assert {"Conv", "Gemm", "MaxPool"} <= set(nodes["CPUExecutionProvider"])
