"""`cnnkit doctor`: why ONNX Runtime's CUDA provider does (not) run here, and the one-line fix."""

from __future__ import annotations

import importlib.metadata as md
import importlib.resources
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from cnnkit.errors import first_line
from cnnkit.runtime import cuda_libs
from cnnkit.runtime.session import CUDA_EP, CUDA_FIX, gpu_visible, open_session


class GpuInfo(TypedDict, total=False):
    visible: bool  # always present
    nvidia_smi: str | None  # always present
    name: str
    driver: str
    count: int


class CudaSession(TypedDict, total=False):
    attempted: bool
    ok: bool
    providers: list[str]
    error: str | None
    libraries: dict[str, Any]  # where CUDA and cuDNN were loaded from, what ONNX Runtime said


@dataclass(frozen=True, kw_only=True)
class DoctorReport:
    python: str
    platform: str
    torch: dict[str, Any]
    gpu: GpuInfo
    onnxruntime: dict[str, Any]
    cuda_session: CudaSession
    engines: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """False when a GPU is visible but ONNX Runtime cannot run a CUDA session."""
        return not (self.gpu.get("visible") and not self.cuda_session.get("ok"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def probe_model() -> bytes:
    """A one-node ONNX model (Relu on float [1, 4]), shipped as a package resource: no onnx package needed."""
    return importlib.resources.files("cnnkit.resources").joinpath("probe.onnx").read_bytes()


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution, or None (without importing it)."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def gpu_info() -> GpuInfo:
    info: GpuInfo = {"visible": gpu_visible(), "nvidia_smi": shutil.which("nvidia-smi")}
    if info["nvidia_smi"]:
        try:
            out = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                .stdout.strip()
                .splitlines()
            )
            if out:
                name, _, driver = out[0].rpartition(",")
                info["name"], info["driver"], info["count"] = name.strip(), driver.strip(), len(out)
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def cuda_session_check() -> CudaSession:
    import numpy as np
    import onnxruntime as ort

    if CUDA_EP not in ort.get_available_providers():
        return {"attempted": False, "ok": False, "providers": [], "error": "this onnxruntime has no CUDA provider"}
    provider_error = None
    try:  # the same session creation as the runtime's (library preloading, ONNX Runtime's log read)
        opened = open_session(probe_model(), "doctor's probe model", want_cuda=True)
        opened.session.run(None, {"x": np.ones((1, 4), np.float32)})
        providers, error, provider_error = opened.session.get_providers(), None, opened.provider_error
    except Exception as exc:  # report, don't crash: this is the diagnostic tool
        providers, error = [], first_line(exc)
    libs = cuda_libs.preload_cuda_libraries()  # what the session above preloaded (done once per process)
    ok = CUDA_EP in providers
    if not ok and error is None:
        # the [E:] line names the missing library; the warnings around it (plugin EP, "Require cuDNN 9.*") don't
        error = provider_error or "ONNX Runtime silently fell back to CPUExecutionProvider"
    return {
        "attempted": True,
        "ok": ok,
        "providers": providers,
        "error": error,
        "libraries": {"cuda": libs.cuda_dir, "cudnn": libs.cudnn_dir, "preload_messages": list(libs.messages)},
    }


def diagnose(model: str | None = None) -> DoctorReport:
    """The report; with `model`, also what `--engine auto` runs it with."""
    import onnxruntime as ort

    problems = []
    ort_pkgs = {d: installed_version(d) for d in ("onnxruntime", "onnxruntime-gpu")}
    has_cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    both = bool(ort_pkgs["onnxruntime"] and ort_pkgs["onnxruntime-gpu"])
    # Both distributions installed: harmless when the GPU build is the one imported (e.g. installed into a
    # folder ahead of the CPU one on the path); a conflict only when the CPU build won.
    conflict = both and not has_cuda_ep
    if conflict:
        problems.append("both onnxruntime and onnxruntime-gpu are installed and the CPU build is the one imported")
    ort_info = {
        "version": ort.__version__,
        "packages": {k: v for k, v in ort_pkgs.items() if v},
        "location": os.path.dirname(ort.__file__),
        "device": ort.get_device(),
        "available_providers": ort.get_available_providers(),
    }
    if both and not conflict:
        ort_info["note"] = "a CPU onnxruntime is also installed; the GPU build imported here shadows it"
    session = cuda_session_check()
    gpu = gpu_info()
    try:
        import torch

        torch_info = {
            "version": torch.__version__,
            "cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": torch.cuda.is_available(),
        }
        if torch.cuda.is_available():
            torch_info["device"] = torch.cuda.get_device_name(0)
    except ImportError:
        torch_info = {"version": None}
    fix = None
    if gpu["visible"] and not session["ok"]:
        problems.append(f"a GPU is visible but ONNX Runtime's CUDA provider failed: {session['error']}")
        fix = "pip uninstall -y onnxruntime && pip install --force-reinstall onnxruntime-gpu" if conflict else CUDA_FIX
    elif not gpu["visible"]:
        problems.append("no NVIDIA GPU visible: cnnkit runs on the CPU (expected on a machine without one)")
    return DoctorReport(
        engines=engines_info(model),
        python=platform.python_version(),
        platform=platform.platform(),
        torch=torch_info,
        gpu=gpu,
        onnxruntime=ort_info,
        cuda_session=session,
        problems=problems,
        fix=fix,
    )


def engines_info(model: str | None = None) -> dict[str, Any]:
    """Which engines are installed (OpenVINO with its CPU capabilities: BF16 and INT8 say what it can run fast), and
    what `--engine auto` runs: for `model`, its plan; without one, the rule."""
    from cnnkit.runtime import openvino_engine, plan

    info: dict[str, Any] = {
        "onnxruntime": installed_version("onnxruntime-gpu") or installed_version("onnxruntime"),
        "openvino": installed_version("openvino"),
        "openvino_cpu": openvino_engine.capabilities(),
    }
    if model is None:
        info["auto"] = "onnxruntime, unless `cnnkit optimize --select` recorded faster choices beside the model"
        return info
    from cnnkit.runtime import Classifier, gates

    clf = Classifier(
        model, device="cpu", engine="onnxruntime", fallback="ignore", trust_int8=True
    )  # a bad file: 1 line
    chosen, served = plan.load(model, "cpu"), plan.load(model, "cpu", concurrent=True)
    info["auto"] = [{"from_batch": size, **c.to_dict()} for size, c in chosen.routes]
    if served.routes != chosen.routes:  # what `cnnkit serve` runs, with batches in flight
        info["auto_serving"] = [{"from_batch": size, **c.to_dict()} for size, c in served.routes]
    info["auto_source"] = chosen.source
    if chosen.note:
        info["auto_note"] = chosen.note
    untrusted = gates.problem(Path(model), clf.info.precision, [c.engine for c in chosen.choices])
    if untrusted:
        info["int8_gate"] = untrusted
    return info
