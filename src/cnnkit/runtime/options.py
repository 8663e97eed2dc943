"""How the runtime runs a model: which engine, how many parallel streams, what float precision (`EngineChoice`),
and the CUDA provider's options (`CudaOptions`). Keyword-only, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.errors import CnnkitError
from cnnkit.spec import ENGINES, INFERENCE_PRECISIONS


@dataclass(frozen=True, kw_only=True)
class EngineChoice:
    """One way to run a model on the CPU.

    engine: "onnxruntime" or "openvino".
    streams: 1 runs each batch in one call on all the threads; N splits a batch into N parts run at once, each on
        its share of the threads (N sessions in ONNX Runtime, N streams in OpenVINO).
    precision: the float arithmetic the engine uses: "fp32" (exact, the default everywhere), or "bf16" where the
        engine and the CPU support it (OpenVINO on CPUs with AVX512-BF16 or AMX). An INT8 file's quantized layers
        run in INT8 either way.
    requests: 1 runs one batch at a time; N (OpenVINO) compiles with OpenVINO's THROUGHPUT hint and N infer
        requests in an AsyncInferQueue, so up to N batches from concurrent callers (`cnnkit serve`, threads) run at
        once, each on one stream of the cores; a lone caller's batch then runs on one stream's share of them.
    """

    engine: str = "onnxruntime"
    streams: int = 1
    precision: str = "fp32"
    requests: int = 1

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise CnnkitError(f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)} or auto")
        if not isinstance(self.streams, int) or not 1 <= self.streams <= 64:
            raise CnnkitError(f"streams must be an integer in 1..64, got {self.streams!r}")
        if not isinstance(self.requests, int) or not 1 <= self.requests <= 64:
            raise CnnkitError(f"requests must be an integer in 1..64, got {self.requests!r}")
        if self.requests > 1 and self.engine != "openvino":
            raise CnnkitError("requests in flight are OpenVINO's THROUGHPUT mode; use engine openvino")
        if self.requests > 1 and self.streams > 1:
            raise CnnkitError("give streams (one batch split) or requests (several batches in flight), not both")
        if self.precision not in INFERENCE_PRECISIONS:
            raise CnnkitError(
                f"unknown precision {self.precision!r}; expected one of {', '.join(INFERENCE_PRECISIONS)}"
            )
        if self.precision == "bf16" and self.engine == "onnxruntime":
            raise CnnkitError("ONNX Runtime has no bf16 execution for this model on the CPU; use engine openvino")

    @property
    def label(self) -> str:
        """A row name: 'onnx', 'openvino', 'openvino-bf16', 'onnx-2s' (two streams), 'openvino-2r' (two requests
        in flight)."""
        name = "onnx" if self.engine == "onnxruntime" else self.engine
        if self.precision != "fp32":
            name += f"-{self.precision}"
        return (
            name
            + (f"-{self.streams}s" if self.streams > 1 else "")
            + (f"-{self.requests}r" if self.requests > 1 else "")
        )

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"engine": self.engine, "streams": self.streams, "precision": self.precision}
        if self.requests > 1:  # absent for one: records written before requests existed read the same
            d["requests"] = self.requests
        return d


@dataclass(frozen=True, kw_only=True)
class CudaOptions:
    """ONNX Runtime's CUDA provider as cnnkit uses it.

    tf32: allow TF32 math (faster, less exact; off by default).
    cuda_graph: capture a CUDA graph (fixed shapes; use `Classifier.cuda_graph_runner`).
    device_id: the CUDA device.
    compute_stream: a CUDA stream handle (e.g. `torch.cuda.current_stream().cuda_stream`) for ONNX Runtime to run
        on, so that GPU inputs produced on that stream are ordered before the model reads them.
    """

    tf32: bool = False
    cuda_graph: bool = False
    device_id: int = 0
    compute_stream: int | None = None
