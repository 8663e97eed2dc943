"""The parity core, on arrays alone: how an output is compared with its reference (names, then shapes, then
values), how a reduced-precision output is gated on labelled images, and the records of both. numpy only."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, option_error
from cnnkit.spec import BENCH_DEVICES, ENGINES, INFERENCE_PRECISIONS

REL_FLOOR = 1e-3  # relative error uses max(|reference|, REL_FLOOR) so logits near zero don't explode it


@dataclass(frozen=True, kw_only=True)
class Gate:
    """How an exported file is judged, and where: fp32 value by value (`|out - ref| <= atol + rtol·|ref|`); INT8 and
    fp16 on the real test split (top-1 agreement with the fp32 reference, accuracy change in points)."""

    atol: float = 1e-4
    rtol: float = 1e-3
    min_agreement: float = 0.995
    max_accuracy_drop: float = 0.3  # percentage points
    device: str = "cpu"  # where the reference and the file run
    data_dir: str | None = None  # the checkpoint's dataset, when it is not where training found it
    engine: str = "onnxruntime"  # what runs an .onnx file: the numbers judged are that engine's
    engine_precision: str = "fp32"  # the engine's float arithmetic; bf16 is judged like fp16, on the real test split

    def __post_init__(self) -> None:
        for name, low, high in (("atol", 0, 1), ("rtol", 0, 1), ("min_agreement", 0, 1), ("max_accuracy_drop", 0, 100)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise CnnkitError(f"gate {name} must be a number in {low}..{high}, got {value!r}")
        if self.device not in BENCH_DEVICES:
            raise CnnkitError(f"gate device must be one of {', '.join(BENCH_DEVICES)}, got {self.device!r}")
        if self.engine not in ENGINES or self.engine_precision not in INFERENCE_PRECISIONS:
            raise CnnkitError(f"gate engine/precision {self.engine!r}/{self.engine_precision!r} unknown")
        if self.engine != "onnxruntime" and self.device != "cpu":
            raise option_error(CnnkitError, "device", self.device, f"the {self.engine} engine runs on the CPU only")

    @property
    def reduced(self) -> bool:
        """The engine computes below fp32: judged on the real test split, not value by value."""
        return self.engine_precision != "fp32"


@dataclass(frozen=True, kw_only=True)
class CaseResult:
    case: str
    batch: int
    shape: list[int]
    max_abs: float
    max_rel: float
    allclose: bool
    top1_agreement: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.allclose

    @classmethod
    def failed(cls, case: str, batch: int, error: str, shape: list[int] | None = None) -> CaseResult:
        """A case that produced no comparable output (a crash, another shape, NaN)."""
        nan = float("nan")
        return cls(
            case=case, batch=batch, shape=shape or [], max_abs=nan, max_rel=nan, allclose=False, top1_agreement=0.0,
            error=error,
        )  # fmt: skip


def compare(case: str, ref: np.ndarray, out: Any, atol: float, rtol: float) -> CaseResult:
    """`out` against the reference logits `ref`: its type and shape first, then its values."""
    if not isinstance(out, np.ndarray):
        return CaseResult.failed(case, len(ref), f"output is {type(out).__name__}, expected one tensor")
    if out.shape != ref.shape:
        shape = list(out.shape)
        return CaseResult.failed(case, len(ref), f"output shape {shape}, expected {list(ref.shape)}", shape)
    if not np.isfinite(out).all():
        inf = float("inf")
        return CaseResult(
            case=case, batch=len(ref), shape=list(out.shape), max_abs=inf, max_rel=inf, allclose=False,
            top1_agreement=0.0, error="non-finite output",
        )  # fmt: skip
    r, o = ref.astype(np.float64), out.astype(np.float64)
    diff = np.abs(o - r)
    rel = diff / np.maximum(np.abs(r), REL_FLOOR)
    return CaseResult(
        case=case,
        batch=len(ref),
        shape=list(out.shape),
        max_abs=float(diff.max()),
        max_rel=float(rel.max()),
        allclose=bool(np.all(diff <= atol + rtol * np.abs(r))),
        top1_agreement=float(np.mean(o.argmax(1) == r.argmax(1))),
    )


@dataclass(frozen=True, kw_only=True)
class AccuracyGate:
    """A reduced-precision artefact against the fp32 reference on the real test split."""

    images: int
    agreement: float  # top-1 agreement with the reference
    reference_accuracy: float
    accuracy: float
    max_abs: float  # logit error, for information
    min_agreement: float
    max_accuracy_drop: float  # points

    @property
    def accuracy_change(self) -> float:
        """In points (percentage points); negative is a loss."""
        return (self.accuracy - self.reference_accuracy) * 100.0

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement and -self.accuracy_change <= self.max_accuracy_drop + 1e-9


def accuracy_gate(ref: np.ndarray, out: np.ndarray, labels: np.ndarray, gate: Gate) -> AccuracyGate:
    """Agreement and accuracy of `out` against the reference logits `ref` on labelled images."""
    if out.shape != ref.shape:
        raise CnnkitError(f"output shape {list(out.shape)}, expected {list(ref.shape)}")
    if not np.isfinite(out).all():
        raise CnnkitError("non-finite output on real test images")
    return AccuracyGate(
        images=len(labels),
        agreement=float(np.mean(out.argmax(1) == ref.argmax(1))),
        reference_accuracy=float(np.mean(ref.argmax(1) == labels)),
        accuracy=float(np.mean(out.argmax(1) == labels)),
        max_abs=float(np.abs(out.astype(np.float64) - ref).max()),
        min_agreement=gate.min_agreement,
        max_accuracy_drop=gate.max_accuracy_drop,
    )


@dataclass(frozen=True, kw_only=True)
class BackendParity:
    backend: str  # "torchscript" | "onnx"
    artefact: str
    ran_on: str  # what really executed: "torch cpu", "CUDAExecutionProvider", ...
    cases: list[CaseResult] = field(default_factory=list)
    error: str | None = None
    nodes: dict[str, list[str]] | None = None  # ONNX Runtime: execution provider -> op types of its nodes
    variant: str = "fp32"  # fp32, fp32-folded, int8-folded, ...
    gate: AccuracyGate | None = None  # reduced precision: judged by this instead of value parity

    @property
    def passed(self) -> bool:
        if self.error is not None:
            return False
        if self.gate is not None:
            return self.gate.passed
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.cases), default=float("nan"))


@dataclass(frozen=True, kw_only=True)
class ParityReport:
    reference: str
    device: str
    atol: float
    rtol: float
    backends: list[BackendParity]
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.backends) and all(b.passed for b in self.backends)

    @property
    def passed(self) -> bool:
        return bool(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        for b, bd in zip(self.backends, d["backends"]):
            bd["passed"] = b.passed
            if b.gate is not None:
                bd["gate"].update(accuracy_change=b.gate.accuracy_change, passed=b.gate.passed)
        return d
