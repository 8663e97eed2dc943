"""Numerical parity: eager PyTorch (the reference) vs TorchScript vs ONNX Runtime on the same inputs.

fp32 artefacts (folded or not) must match the unfolded eager model value by value within atol/rtol. INT8 and fp16
artefacts cannot, by design: they are gated on the real test split instead (top-1 agreement with the fp32
reference, and accuracy change), with the logit error reported as information.

Collect, then decide: every backend runs every case (names, then shapes, then values) before the
report says pass or fail.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError, ModelFileError, first_line
from cnnkit.export.artifacts import artefact_kind, find_checkpoint, load_torchscript
from cnnkit.train.checkpoint import deployable

REL_FLOOR = 1e-3  # relative error uses max(|reference|, REL_FLOOR) so logits near zero don't explode it
REAL_BATCH = 256


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for b, bd in zip(self.backends, d["backends"]):
            bd["passed"] = b.passed
            if b.gate is not None:
                bd["gate"].update(accuracy_change=b.gate.accuracy_change, passed=b.gate.passed)
        return d


def real_test_split(ckpt, data_dir=None):
    """(the checkpoint's own dataset, None), or (None, why it is not at hand)."""
    from cnnkit.datasets import load_recorded

    try:
        return load_recorded(ckpt.meta.dataset, data_dir), None
    except (CnnkitError, KeyError, ValueError) as exc:
        return None, str(exc)


def input_cases(ckpt, rng: np.random.Generator, ds=None) -> list[tuple[str, np.ndarray]]:
    """Real test images (when `ds` is given), random batches of several sizes, and edge inputs."""
    c, s = ckpt.meta.config.in_channels, ckpt.meta.config.image_size
    cases = []
    if ds is not None:
        real = ds.test_images[:REAL_BATCH].reshape(-1, c, s, s)
        cases.append((f"{ds.name} test images", np.ascontiguousarray(real)))
    for n in (1, 37, 256):
        cases.append((f"random uint8 b={n}", rng.integers(0, 256, (n, c, s, s), dtype=np.uint8)))
    cases.append(("all 0", np.zeros((8, c, s, s), np.uint8)))
    cases.append(("all 255", np.full((8, c, s, s), 255, np.uint8)))
    return cases


def compare(case: str, ref: np.ndarray, out, atol: float, rtol: float) -> CaseResult:
    """Shapes first, then values."""
    if not isinstance(out, np.ndarray):
        return CaseResult(
            case,
            len(ref),
            [],
            float("nan"),
            float("nan"),
            False,
            0.0,
            f"output is {type(out).__name__}, expected one tensor",
        )
    if out.shape != ref.shape:
        return CaseResult(
            case,
            len(ref),
            list(out.shape),
            float("nan"),
            float("nan"),
            False,
            0.0,
            f"output shape {list(out.shape)}, expected {list(ref.shape)}",
        )
    r, o = ref.astype(np.float64), out.astype(np.float64)
    diff = np.abs(o - r)
    if not np.isfinite(o).all():
        return CaseResult(case, len(ref), list(out.shape), float("inf"), float("inf"), False, 0.0, "non-finite output")
    rel = diff / np.maximum(np.abs(r), REL_FLOOR)
    ok = bool(np.all(diff <= atol + rtol * np.abs(r)))
    agree = float(np.mean(o.argmax(1) == r.argmax(1)))
    return CaseResult(case, len(ref), list(out.shape), float(diff.max()), float(rel.max()), ok, agree)


def _torch_ref(module, device):
    import torch

    from cnnkit.train.model import tensor_from

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = module(tensor_from(x).to(device))
        return y.float().cpu().numpy() if isinstance(y, torch.Tensor) else y

    return run


def verify(
    artefacts: list[str | os.PathLike[str]],
    checkpoint_path: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    atol: float = 1e-4,
    rtol: float = 1e-3,
    names: dict[str, str] | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    min_agreement: float = 0.995,
    max_accuracy_drop: float = 0.3,
) -> ParityReport:
    """Compare each artefact with the eager reference built from the checkpoint; never raises on a mismatch.

    `data_dir` points at the checkpoint's dataset when it is not where training found it; the INT8/fp16 gates
    (`min_agreement`, `max_accuracy_drop` in points) need its real test split.
    """
    import torch

    from cnnkit.runtime import CUDA_EP, Classifier
    from cnnkit.train import checkpoint
    from cnnkit.train.device import resolve_torch_device

    paths = [Path(a) for a in artefacts]
    if not paths:
        raise ModelFileError("no artefacts to verify; pass .onnx and/or .ts files")
    names = names or {}
    ckpt = checkpoint.load(checkpoint_path if checkpoint_path is not None else find_checkpoint(paths))
    dev = resolve_torch_device(device)
    if dev.type == "cuda":  # fp32 parity means no TF32 on either side
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    reference = _torch_ref(deployable(ckpt).to(dev), dev)
    ds, missing = real_test_split(ckpt, data_dir)
    notes = [] if ds is not None else [f"real test images unavailable ({missing}); random and edge inputs only"]
    cases = input_cases(ckpt, np.random.default_rng(seed), ds)
    refs = [reference(x) for _, x in cases]

    @functools.cache
    def test_split() -> tuple[np.ndarray, np.ndarray]:
        """The whole real test split and the reference's logits on it: computed once, when a gate needs them."""
        assert ds is not None
        c, side = ckpt.meta.config.in_channels, ckpt.meta.config.image_size
        x = np.ascontiguousarray(ds.test_images.reshape(-1, c, side, side))
        return x, in_chunks(reference, x)

    backends = []
    for path in paths:
        shown = names.get(str(path), str(path))
        try:
            kind = artefact_kind(path)
        except ModelFileError as exc:
            backends.append(BackendParity("?", shown, "-", error=str(exc)))
            continue
        error, nodes, variant = None, None, "fp32"
        try:
            if kind == "torchscript":
                module, info = load_torchscript(path, map_location=dev)
                run, ran_on, variant = _torch_ref(module, dev), f"torch {dev.type}", info.variant
            else:
                # a fall-back is reported below as a failure instead of a warning
                clf = Classifier(path, device=dev.type, tf32=False, fallback="ignore")
                ran_on, nodes, variant = clf.providers[0], clf.node_assignment, clf.info.variant
                if dev.type == "cuda" and CUDA_EP not in clf.providers:
                    error = f"CUDA requested but ONNX Runtime fell back to CPU: {clf.fallback_reason}"
                if clf.info.num_classes != len(ckpt.meta.classes):
                    error = f"model has {clf.info.num_classes} classes, checkpoint {len(ckpt.meta.classes)}"
                run = clf.logits
        except CnnkitError as exc:
            backends.append(BackendParity(kind, shown, "-", error=str(exc)))
            continue
        if not variant.startswith("fp32"):
            gate, gate_error = None, error
            if ds is None:
                gate_error = (
                    gate_error or f"{variant} is judged on the real test split, which is not at hand ({missing})"
                )
            else:
                x_all, ref_all = test_split()
                try:
                    out = in_chunks(run, x_all)
                    gate = accuracy_gate(ref_all, out, ds.test_labels, min_agreement, max_accuracy_drop)
                except Exception as exc:  # a crash on real images is a failure, not a traceback
                    gate_error = gate_error or first_line(exc)
            backends.append(BackendParity(kind, shown, ran_on, [], gate_error, nodes, variant, gate))
            continue
        results = []
        for (case, x), ref in zip(cases, refs):
            try:
                results.append(compare(case, ref, run(x), atol, rtol))
            except Exception as exc:  # a backend that crashes on an input is a parity failure, not a crash
                results.append(CaseResult(case, len(x), [], float("nan"), float("nan"), False, 0.0, first_line(exc)))
        backends.append(BackendParity(kind, shown, ran_on, results, error, nodes, variant))
    return ParityReport(str(ckpt.path), dev.type, atol, rtol, backends, notes)


def in_chunks(run, x: np.ndarray, n: int = 1000) -> np.ndarray:
    """`run` over `x` in batches of `n` (a 10,000-image batch would take gigabytes in eager PyTorch)."""
    return np.concatenate([run(x[i : i + n]) for i in range(0, len(x), n)])


def accuracy_gate(
    ref: np.ndarray, out: np.ndarray, labels: np.ndarray, min_agreement: float, max_accuracy_drop: float
) -> AccuracyGate:
    """Agreement and accuracy of `out` against the reference logits `ref` on labelled images."""
    if out.shape != ref.shape:
        raise CnnkitError(f"output shape {list(out.shape)}, expected {list(ref.shape)}")
    if not np.isfinite(out).all():
        raise CnnkitError("non-finite output on real test images")
    agreement = float(np.mean(out.argmax(1) == ref.argmax(1)))
    return AccuracyGate(
        len(labels),
        agreement,
        float(np.mean(ref.argmax(1) == labels)),
        float(np.mean(out.argmax(1) == labels)),
        float(np.abs(out.astype(np.float64) - ref).max()),
        min_agreement,
        max_accuracy_drop,
    )
