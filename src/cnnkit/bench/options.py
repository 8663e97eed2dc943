"""The options of `cnnkit bench` and `cnnkit optimize` (`BenchConfig`, `OptimizeOptions`), the backends' names, and
how a row is named. Light (numpy at most): the CLI reads its defaults from here."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from cnnkit.errors import CnnkitError, DeviceError, option_error
from cnnkit.export.compare import Gate
from cnnkit.spec import BENCH_DEVICES

BACKENDS = ("eager", "torchscript", "exported", "aoti", "onnx", "openvino", "openvino-bf16", "compile",
            "eager-cudagraph", "onnx-cudagraph")  # fmt: skip
PT2_BACKENDS = ("exported", "aoti")  # torch.export's ExportedProgram and an AOTInductor package (.pt2 files)
CUDA_ONLY = ("eager-cudagraph", "onnx-cudagraph")
CPU_ONLY = ("openvino", "openvino-bf16")
ONNX_BACKENDS = ("onnx", "openvino", "openvino-bf16", "onnx-cudagraph")  # they run an .onnx file in the runtime


def row_name(backend: str, file_tag: str | None = None) -> str:
    """A bench row's name: its backend ('onnx', 'openvino-2s', ...) and, where several .onnx files are measured
    side by side, the file's tag ('int8-folded'): 'openvino-2s:int8-folded'. Bench and optimize both name rows so."""
    return backend if file_tag is None else f"{backend}:{file_tag}"


def default_backends(device: str) -> tuple[str, ...]:
    """What bench measures unless told: eager, TorchScript and ONNX Runtime, and OpenVINO on a CPU that has it."""
    openvino = device == "cpu" and importlib.util.find_spec("openvino") is not None
    return ("eager", "torchscript", "onnx") + (("openvino",) if openvino else ())


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What a benchmark measures and how (built once from the CLI)."""

    device: str = "cpu"
    backends: tuple[str, ...] = ()  # none named: `default_backends(device)`
    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    warmup: int = 10  # untimed calls per backend and batch size (and at least 0.2 s)
    iters: int | None = None  # timed calls per backend and batch size; None: `min_time` seconds
    min_time: float = 1.5
    threads: int | None = None  # CPU threads for every backend (None: all cores)
    streams: tuple[int, ...] = (1,)  # engine backends: rows for each number of parallel single-threaded streams
    requests: tuple[int, ...] = (1,)  # OpenVINO backends: rows with N requests in flight, timed with N batches at once
    rounds: int = 5
    seed: int = 0
    tf32: bool = False  # CUDA: TF32 in every backend alike
    trust_torchscript: bool = False  # load a run folder's model.ts (it runs code); else export one from the checkpoint

    def __post_init__(self) -> None:
        if not self.backends:
            object.__setattr__(self, "backends", default_backends(self.device))
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise CnnkitError(f"unknown backend(s) {unknown}; expected some of {', '.join(BACKENDS)}")
        if self.device not in BENCH_DEVICES:
            raise DeviceError(f"unknown device {self.device!r}; expected cpu or cuda")
        cuda_only = [b for b in self.backends if b in CUDA_ONLY]
        if self.device != "cuda" and cuda_only:
            raise option_error(DeviceError, "device", self.device, f"{', '.join(cuda_only)} run on CUDA only")
        cpu_only = [b for b in self.backends if b in CPU_ONLY]
        if self.device != "cpu" and (cpu_only or self.streams != (1,)):
            raise option_error(
                DeviceError, "device", self.device, f"{', '.join(cpu_only) or 'streams'} run on the CPU only"
            )
        if not self.streams or min(self.streams) < 1:
            raise CnnkitError(f"streams must be at least 1, got {list(self.streams)}")
        if not self.requests or min(self.requests) < 1:
            raise CnnkitError(f"requests must be at least 1, got {list(self.requests)}")
        if self.device != "cpu" and self.requests != (1,):
            raise option_error(DeviceError, "device", self.device, "requests in flight run on the CPU only (OpenVINO)")
        if not self.batch_sizes or min(self.batch_sizes) < 1 or self.rounds < 1 or self.warmup < 0:
            raise CnnkitError("batch sizes and rounds must be at least 1, warm-up at least 0")

    @property
    def torch_backends(self) -> list[str]:
        return [b for b in self.backends if b not in ONNX_BACKENDS]

    @property
    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True, kw_only=True)
class OptimizeOptions:
    """Which batch sizes to measure, for how long, and whether to select the winner (built once from the CLI).
    Candidates are verified and benchmarked on `gate.device`."""

    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    min_time: float = 1.0
    select: bool = False
    target_batch: int = 64
    aoti: bool = False  # also the AOTInductor candidate (compiled for this machine: about a minute)
    gate: Gate = field(default_factory=Gate)

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise CnnkitError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        if self.select and self.target_batch not in self.batch_sizes:
            sizes = ",".join(map(str, self.batch_sizes))
            reason = f"select picks the fastest at this batch size, which is not among batch_sizes {sizes}; add it"
            raise option_error(CnnkitError, "target_batch", self.target_batch, reason)

    @property
    def device(self) -> str:
        return self.gate.device
