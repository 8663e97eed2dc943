"""Numerical parity: eager PyTorch (the reference) vs TorchScript vs ONNX Runtime on the same inputs.

fp32 artefacts (folded or not) must match the unfolded eager model value by value within the gate's atol/rtol.
INT8 and fp16 artefacts cannot, by design: they are gated on the real test split instead (top-1 agreement with the
fp32 reference, and accuracy change), with the logit error reported as information.

Collect, then decide: every backend runs every case (names, then shapes, then values) before the report says pass
or fail. The comparisons themselves are `export.compare`, on arrays alone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.contract import MANIFEST
from cnnkit.data.dataset import Dataset
from cnnkit.data.datasets import load_recorded
from cnnkit.errors import CnnkitError, ModelFileError, first_line
from cnnkit.export.artefacts import artefact_kind, find_checkpoint, gate_record, load_torchscript, record_gate
from cnnkit.export.compare import (
    AccuracyGate,
    BackendParity,
    CaseResult,
    Gate,
    ParityReport,
    accuracy_gate,
    compare,
)
from cnnkit.export.runners import Runner, onnx_runner, torch_runner
from cnnkit.runtime import EngineChoice
from cnnkit.runtime.cpu import cpu_flags
from cnnkit.train import checkpoint
from cnnkit.train.checkpoint import deployable
from cnnkit.train.device import resolve_torch_device

__all__ = ["AccuracyGate", "BackendParity", "CaseResult", "Gate", "ParityReport", "verify"]

REAL_BATCH = 256


def real_test_split(ckpt: Any, data_dir: str | os.PathLike[str] | None = None) -> tuple[Dataset | None, str | None]:
    """(the checkpoint's own dataset, None), or (None, why it is not at hand)."""
    try:
        return load_recorded(ckpt.meta.dataset, data_dir), None
    except (CnnkitError, KeyError, ValueError) as exc:
        return None, str(exc)


def input_cases(ckpt: Any, rng: np.random.Generator, ds: Dataset | None = None) -> list[tuple[str, np.ndarray]]:
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


def in_chunks(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n: int = 1000) -> np.ndarray:
    """`run` over `x` in batches of `n` (a 10,000-image batch would take gigabytes in eager PyTorch)."""
    return np.concatenate([run(x[i : i + n]) for i in range(0, len(x), n)])


@dataclass(kw_only=True)
class Reference:
    """The eager model of a checkpoint and its outputs on every case (and, once asked for, on the test split)."""

    ckpt: Any
    device: Any  # torch.device
    runner: Runner
    ds: Dataset | None
    missing: str | None  # why the real test split is not at hand
    cases: list[tuple[str, np.ndarray]]
    outputs: list[np.ndarray]

    @functools.cached_property
    def test_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole real test split and the reference's logits on it: computed once, when a gate needs them."""
        if self.ds is None:
            raise CnnkitError(f"the real test split is not at hand ({self.missing})")
        c, side = self.ckpt.meta.config.in_channels, self.ckpt.meta.config.image_size
        x = np.ascontiguousarray(self.ds.test_images.reshape(-1, c, side, side))
        return x, in_chunks(self.runner.infer, x)


def reference(ckpt: Any, gate: Gate, seed: int = 0) -> Reference:
    import torch

    dev = resolve_torch_device(gate.device)
    if dev.type == "cuda":  # fp32 parity means no TF32 on either side
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    runner = torch_runner("eager", deployable(ckpt).to(dev), dev)
    ds, missing = real_test_split(ckpt, gate.data_dir)
    cases = input_cases(ckpt, np.random.default_rng(seed), ds)
    outputs = [runner.infer(x) for _, x in cases]
    return Reference(ckpt=ckpt, device=dev, runner=runner, ds=ds, missing=missing, cases=cases, outputs=outputs)


def verify(
    artefacts: list[str | os.PathLike[str]],
    checkpoint_path: str | os.PathLike[str] | None = None,
    gate: Gate = Gate(),
    *,
    names: dict[str, str] | None = None,
    seed: int = 0,
) -> ParityReport:
    """Compare each artefact with the eager reference built from the checkpoint; never raises on a mismatch.

    `names` shows a staged file under the name it will have; the INT8/fp16 gates need the checkpoint's real test
    split (`gate.data_dir` when it is not where training found it).
    """
    paths = [Path(a) for a in artefacts]
    if not paths:
        raise ModelFileError("no artefacts to verify; pass .onnx and/or .ts files")
    ckpt = checkpoint.load(checkpoint_path if checkpoint_path is not None else find_checkpoint(paths))
    ref = reference(ckpt, gate, seed)
    notes = [] if ref.ds is not None else [f"real test images unavailable ({ref.missing}); random and edge inputs only"]
    backends = [check_artefact(path, (names or {}).get(str(path), str(path)), ref, gate) for path in paths]
    notes += _record_gates(paths, backends, gate, names or {})
    return ParityReport(
        reference=str(ckpt.path), device=ref.device.type, atol=gate.atol, rtol=gate.rtol, backends=backends,
        notes=notes,
    )  # fmt: skip


def int8_gates(backends: list[BackendParity], engine: str) -> dict[str, dict[str, Any]]:
    """Each passing INT8 file's gate on this CPU in `engine`, as exports.json records it (`runtime.gates`), by the
    artefact name the report shows."""
    return {
        b.artefact: gate_record(engine, b.gate.agreement, b.gate.accuracy_change)
        for b in backends
        if b.gate is not None and b.passed and b.variant.startswith("int8")
    }


def _record_gates(paths: list[Path], backends: list[BackendParity], gate: Gate, staged: dict[str, str]) -> list[str]:
    """Record each passing INT8 gate beside its file (exports.json): the runtime trusts an INT8 file on a CPU whose
    instruction-set flags a passing gate names. Staged files are recorded by the export, once they land."""
    records = int8_gates(backends, gate.engine)
    notes = []
    for path in paths:
        if str(path) not in staged and str(path) in records and record_gate(path, records[str(path)]):
            notes.append(f"{path}: its INT8 gate on this CPU ({'+'.join(cpu_flags()) or 'no flags'}) in {gate.engine} "
                         f"recorded in {path.parent / MANIFEST}")  # fmt: skip
    return notes


def open_runner(path: Path, kind: str, ref: Reference, gate: Gate) -> tuple[Runner, str | None]:
    """The artefact's runner on the reference's device (an .onnx file in the gate's engine), and what disqualifies
    it before any comparison."""
    dev = ref.device
    if kind == "torchscript":
        module, info = load_torchscript(path, map_location=dev)
        return torch_runner("torchscript", module, dev, variant=info.variant), None
    if kind in ("exported", "aoti"):
        from cnnkit.export import torch_formats

        module, info = torch_formats.load(path, dev)
        return torch_runner(kind, module, dev, variant=info.variant), None
    choice = EngineChoice(engine=gate.engine, precision=gate.engine_precision)
    runner = onnx_runner(path, dev.type, engine=choice)  # a fall-back is reported as a failure, not a warning
    problem = None
    classes = len(ref.ckpt.meta.classes)
    if runner.fell_back:
        problem = f"CUDA requested but ONNX Runtime fell back to CPU: {runner.fallback_reason}"
    if runner.num_classes != classes:
        problem = f"model has {runner.num_classes} classes, checkpoint {classes}"
    return runner, problem


def check_artefact(path: Path, shown: str, ref: Reference, gate: Gate) -> BackendParity:
    """One artefact against the reference: value by value (fp32) or through the accuracy gate (INT8, fp16)."""
    try:
        kind = artefact_kind(path)
    except ModelFileError as exc:
        return BackendParity(backend="?", artefact=shown, ran_on="-", error=str(exc))
    try:
        runner, problem = open_runner(path, kind, ref, gate)
    except CnnkitError as exc:
        return BackendParity(backend=kind, artefact=shown, ran_on="-", error=str(exc))
    common: dict[str, Any] = {"backend": kind, "artefact": shown, "ran_on": runner.ran_on, "nodes": runner.nodes}
    if not runner.variant.startswith("fp32") or (kind == "onnx" and gate.reduced):
        result, error = _gated(runner, ref, gate)
        return BackendParity(**common, error=problem or error, variant=runner.variant, gate=result)
    results = []
    for (case, x), expected in zip(ref.cases, ref.outputs):
        try:
            results.append(compare(case, expected, runner.infer(x), gate.atol, gate.rtol))
        except Exception as exc:  # a backend that crashes on an input is a parity failure, not a crash
            results.append(CaseResult.failed(case, len(x), first_line(exc)))
    return BackendParity(**common, cases=results, error=problem, variant=runner.variant)


def _gated(runner: Runner, ref: Reference, gate: Gate) -> tuple[AccuracyGate | None, str | None]:
    """A reduced-precision runner through the accuracy gate on the real test split, or why it could not be."""
    if ref.ds is None:
        what = f"{runner.variant} on {runner.ran_on}"
        return None, f"{what} is judged on the real test split, which is not at hand ({ref.missing})"
    x_all, ref_all = ref.test_split
    try:
        return accuracy_gate(ref_all, in_chunks(runner.infer, x_all), ref.ds.test_labels, gate), None
    except Exception as exc:  # a crash on real images is a failure, not a traceback
        return None, first_line(exc)
