"""The ONNX Runtime session: providers, their options, and what really runs. Imports onnxruntime only."""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import onnxruntime as ort

from cnnkit.errors import ModelFileError, first_line
from cnnkit.runtime import cuda_libs, self_contained

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
CUDA_FIX = (
    "install the CUDA 13 and cuDNN 9 runtime libraries that onnxruntime-gpu needs (e.g. the nvidia-*-cu13 and "
    "nvidia-cudnn-cu13 wheels, which a CUDA build of torch brings) and check `nvidia-smi`; run `cnnkit doctor`"
)


def gpu_visible() -> bool:
    """An NVIDIA GPU is visible to this process (driver device nodes present), checked without CUDA."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or bool(glob.glob("/proc/driver/nvidia/gpus/*"))


def _cuda_cause() -> str:
    """What stands between this process and CUDA: "gpu" (none visible), "build" (a CPU onnxruntime) or
    "libraries" (the provider is there but did not load)."""
    if not gpu_visible():
        return "gpu"
    return "build" if CUDA_EP not in ort.get_available_providers() else "libraries"


def cuda_fix() -> str:
    """The fix for what `cuda_fallback_reason` reports: another machine, the GPU build, or its libraries."""
    return {
        "gpu": "run on a machine with an NVIDIA GPU, or on the CPU (device 'cpu' or 'auto')",
        "build": "pip install onnxruntime-gpu (and uninstall onnxruntime)",
    }.get(_cuda_cause(), CUDA_FIX)


def cuda_fallback_reason(ort_log: str = "") -> str:
    """Why ONNX Runtime's CUDA provider could not be used here: its own error line when `ort_log` (what it
    logged while the session was made) has one, else the likeliest cause."""
    cause = _cuda_cause()
    if cause == "gpu":
        return "no NVIDIA GPU is visible (no /dev/nvidia* device)"
    if cause == "build":
        return f"this onnxruntime build ({ort.get_device()}) has no CUDA provider; install onnxruntime-gpu"
    error = cuda_libs.ort_error(ort_log)
    if error:
        return f"the CUDA provider failed to load: {error}"
    return "the CUDA provider failed to load (usually missing or mismatched CUDA/cuDNN libraries)"


def session_options(intra_op_threads: int | None = None, spin: bool = True) -> ort.SessionOptions:
    """Graph optimisation ALL, errors-only logging, and the record of which provider runs each node. `spin=False`
    lets the intra-op threads sleep between calls instead of spinning (a server's event loop needs those cores)."""
    so = ort.SessionOptions()
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")  # older releases ignore it
    if intra_op_threads:
        so.intra_op_num_threads = int(intra_op_threads)
    so.log_severity_level = 3  # errors only; provider fall-backs are reported by cnnkit itself
    return so


def cuda_provider_options(
    device_id: int = 0, tf32: bool = False, enable_cuda_graph: bool = False, compute_stream: int | None = None
) -> dict[str, str]:
    """Options for ONNX Runtime's CUDA provider, as cnnkit uses it."""
    opts = {
        "device_id": str(device_id),
        # HEURISTIC picks a conv algorithm without timing them all: no first-request stall, steady latency.
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
        # TF32 is on by default on Ampere+ and costs fp32 parity (~1e-3 error); off unless asked for.
        "use_tf32": "1" if tf32 else "0",
        "enable_cuda_graph": "1" if enable_cuda_graph else "0",
    }
    if compute_stream:
        # Run on the caller's CUDA stream (e.g. torch's), so work queued there is ordered with ours.
        opts["user_compute_stream"] = str(int(compute_stream))
        opts["has_user_compute_stream"] = "1"
    return opts


def read_model(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    """The model's bytes and a name for messages; a model that keeps tensors in external files is refused."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    else:
        p = Path(source)
        if not p.is_file():
            raise ModelFileError(f"{p}: ONNX model not found")
        data, name = p.read_bytes(), str(p)
    self_contained.check(data, name)
    return data, name


class OpenedSession(NamedTuple):
    session: ort.InferenceSession
    fallback_reason: str | None  # why CUDA was asked for but not given (None when it was, or was not asked for)
    provider_error: str | None  # ONNX Runtime's own [E:] line about it, when it logged one


def open_session(
    data: bytes,
    source: str,
    want_cuda: bool,
    intra_op_threads: int | None = None,
    cuda_options: dict[str, str] | None = None,
    spin: bool = True,
) -> OpenedSession:
    """An InferenceSession, and what became of a request for CUDA.

    ONNX Runtime logs provider problems to the process's stderr: they are read here (the real error line becomes
    the reason) and only what cnnkit does not report itself is passed on.
    """
    providers: list[Any] = [CPU_EP]
    if want_cuda:
        cuda_libs.preload_cuda_libraries()
        providers = [(CUDA_EP, cuda_options or cuda_provider_options()), CPU_EP]
    log = cuda_libs.capture_stderr_fd() if want_cuda else contextlib.nullcontext(cuda_libs.Captured())
    try:
        with log as captured:
            session = ort.InferenceSession(
                data, sess_options=session_options(intra_op_threads, spin), providers=providers
            )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        sys.stderr.write(cuda_libs.passthrough(captured.text, fell_back=False))
        raise ModelFileError(f"{source}: ONNX Runtime cannot load this model ({first_line(exc)})") from None
    fell_back = want_cuda and CUDA_EP not in session.get_providers()
    sys.stderr.write(cuda_libs.passthrough(captured.text, fell_back=fell_back))
    if not fell_back:
        return OpenedSession(session, None, None)
    return OpenedSession(session, cuda_fallback_reason(captured.text), cuda_libs.ort_error(captured.text))


def node_assignment(session: ort.InferenceSession) -> dict[str, list[str]] | None:
    """{execution provider: op types of the nodes it runs}, for a session made with `session_options`."""
    get = getattr(session, "get_provider_graph_assignment_info", None)
    if get is None:  # onnxruntime < 1.31
        return None
    try:
        subgraphs = get()
    except Exception:  # recording was not enabled for this session
        return None
    out: dict[str, list[str]] = {}
    for sg in subgraphs:
        out.setdefault(sg.ep_name, []).extend(n.op_type for n in sg.get_nodes())
    return out
