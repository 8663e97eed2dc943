"""The parity core and the accuracy gate on tiny arrays: no model, no files."""

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.export.compare import (
    REL_FLOOR,
    AccuracyGate,
    BackendParity,
    CaseResult,
    Gate,
    ParityReport,
    accuracy_gate,
    compare,
)

REF = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], np.float32)


def test_equal_outputs_pass_with_zero_error():
    r = compare("same", REF, REF.copy(), atol=0, rtol=0)
    assert r.passed and r.max_abs == 0 and r.max_rel == 0 and r.top1_agreement == 1.0 and r.batch == 2


def test_the_tolerance_is_atol_plus_rtol_times_the_reference():
    out = REF.copy()
    out[0, 2] += 3e-3  # |ref| = 3: allowed 1e-4 + 1e-3 * 3 = 3.1e-3
    assert compare("inside", REF, out, atol=1e-4, rtol=1e-3).passed
    out[0, 2] += 2e-4  # 3.2e-3 > 3.1e-3
    r = compare("outside", REF, out, atol=1e-4, rtol=1e-3)
    assert not r.passed and r.error is None and r.max_abs == pytest.approx(3.2e-3, rel=1e-3)


def test_relative_error_near_zero_uses_the_floor():
    out = REF.copy()
    out[1, 2] = 1e-4  # the reference is 0 there
    r = compare("near zero", REF, out, atol=1, rtol=0)
    assert r.max_rel == pytest.approx(1e-4 / REL_FLOOR, rel=1e-3)


def test_shape_then_type_then_finiteness_are_failures_that_say_so():
    assert compare("shape", REF, REF[:, :2], 1, 1).error == "output shape [2, 2], expected [2, 3]"
    assert compare("type", REF, [[1.0]], 1, 1).error == "output is list, expected one tensor"
    nan = REF.copy()
    nan[0, 0] = np.nan
    r = compare("nan", REF, nan, 1, 1)
    assert not r.passed and r.error == "non-finite output"


def test_top1_agreement_counts_rows_whose_argmax_moved():
    out = REF.copy()
    out[1] = [0.0, 0.0, 5.0]  # row 1's top class changes from 0 to 2
    assert compare("moved", REF, out, 10, 10).top1_agreement == 0.5


def test_accuracy_gate_in_points_with_its_bounds():
    ref = np.eye(4, dtype=np.float32)  # predicts 0, 1, 2, 3
    labels = np.array([0, 1, 2, 2])  # the reference is right on 3 of 4
    out = ref.copy()
    out[1] = [1, 0, 0, 0]  # one prediction moves to a wrong class
    g = accuracy_gate(ref, out, labels, Gate(min_agreement=0.75, max_accuracy_drop=25.0))
    assert (g.agreement, g.reference_accuracy, g.accuracy) == (0.75, 0.75, 0.5)
    assert g.accuracy_change == pytest.approx(-25.0) and g.passed  # exactly at both bounds
    strict = accuracy_gate(ref, out, labels, Gate(min_agreement=0.76, max_accuracy_drop=25.0))
    assert not strict.passed
    assert not accuracy_gate(ref, out, labels, Gate(min_agreement=0.5, max_accuracy_drop=24.9)).passed


def test_accuracy_gate_refuses_wrong_shapes_and_nan():
    ref = np.eye(3, dtype=np.float32)
    with pytest.raises(CnnkitError, match="output shape"):
        accuracy_gate(ref, ref[:2], np.arange(3), Gate())
    with pytest.raises(CnnkitError, match="non-finite"):
        accuracy_gate(ref, ref * np.nan, np.arange(3), Gate())


@pytest.mark.parametrize(
    "bad", [{"atol": -1}, {"rtol": float("nan")}, {"min_agreement": 1.5}, {"max_accuracy_drop": 101}, {"device": "tpu"}]
)
def test_a_gate_out_of_bounds_is_refused_when_made(bad):
    with pytest.raises(CnnkitError, match=next(iter(bad))):
        Gate(**bad)


def _gate(passed: bool) -> AccuracyGate:
    return AccuracyGate(
        images=10, agreement=1.0 if passed else 0.0, reference_accuracy=1.0, accuracy=1.0, max_abs=0.1,
        min_agreement=0.9, max_accuracy_drop=0.3,
    )  # fmt: skip


def test_a_report_passes_only_when_every_backend_does():
    ok = CaseResult(case="c", batch=1, shape=[1, 3], max_abs=0, max_rel=0, allclose=True, top1_agreement=1)
    good = BackendParity(backend="onnx", artefact="a", ran_on="cpu", cases=[ok])
    gated = BackendParity(backend="onnx", artefact="b", ran_on="cpu", variant="int8-folded", gate=_gate(True))
    failing_gate = BackendParity(backend="onnx", artefact="c", ran_on="cpu", gate=_gate(False))
    errored = BackendParity(backend="onnx", artefact="d", ran_on="cpu", cases=[ok], error="fell back")
    empty = BackendParity(backend="onnx", artefact="e", ran_on="cpu")

    def report(*backends):
        return ParityReport(reference="r", device="cpu", atol=0, rtol=0, backends=list(backends))

    assert report(good, gated) and report(good, gated).to_dict()["passed"] is True
    assert not report() and not report(good, failing_gate) and not report(errored) and not report(empty)
    d = report(gated).to_dict()["backends"][0]["gate"]
    assert d["passed"] is True and d["accuracy_change"] == 0.0
