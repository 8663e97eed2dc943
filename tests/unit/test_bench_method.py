"""The benchmark method on fake runners (no model): alternated rounds, the iteration split, a failing runner as a
row with its error, the fastest row (CPU fall-backs not counted), the engine record, the row names."""

import json

import numpy as np
import pytest

from cnnkit.bench import engine_choices as ec
from cnnkit.bench.measure import Measurement, timed
from cnnkit.bench.results import BenchResult, BenchRow, Stats
from cnnkit.export.runners import Runner
from cnnkit.runtime import EngineChoice


def _runner(name: str, calls: list[str], fail_after: int | None = None) -> Runner:
    def infer(x: np.ndarray) -> np.ndarray:
        calls.append(name)
        if fail_after is not None and calls.count(name) > fail_after:
            raise RuntimeError(f"{name} broke\nsecond line")
        return np.zeros((len(x), 10), np.float32)

    return Runner(name=name, ran_on="fake", infer=infer)


def test_timed_counts_or_runs_for_its_budget():
    n = []
    wall, dev = timed(lambda: n.append(1), 7, 0)
    assert len(wall) == 7 == len(n) and dev == []
    wall, _ = timed(lambda: None, None, 0.01)
    assert len(wall) >= 1 and sum(wall) <= 0.01 + 0.05


def test_rounds_alternate_who_goes_first_and_split_the_iterations():
    calls: list[str] = []
    runners = {n: _runner(n, calls) for n in ("a", "b", "c")}
    rows = Measurement(warmup=1, iters=9, min_time=0, rounds=3, events=None).rows(
        np.zeros((2, 1, 28, 28), np.uint8), runners, {}, ["a", "b", "c"]
    )
    assert [r.backend for r in rows] == ["a", "b", "c"] and all(r.latency.n == 9 for r in rows)  # 3 per round
    # after the warm-up (1 call + 0.2 s each), the rounds: a b c, then b c a, then c a b (3 calls each per turn)
    tail = calls[-27:]
    firsts = [tail[i] for i in (0, 9, 18)]
    assert firsts == ["a", "b", "c"]
    assert all(r.images_per_s and r.images_per_s > 0 for r in rows)


def test_a_runner_that_fails_is_a_row_saying_why_and_the_others_still_time():
    calls: list[str] = []
    runners = {"good": _runner("good", calls), "bad": _runner("bad", calls, fail_after=0)}
    rows = Measurement(warmup=1, iters=2, min_time=0, rounds=1, events=None).rows(
        np.zeros((1, 1, 28, 28), np.uint8), runners, {"never": "ImportError: no torch"}, ["good", "bad", "never"]
    )
    by = {r.backend: r for r in rows}
    assert by["good"].latency is not None and by["good"].error is None
    assert by["bad"].latency is None and by["bad"].error == "RuntimeError: bad broke"
    assert by["never"].error == "ImportError: no torch" and by["never"].ran_on == "-"


def _row(backend: str, batch: int, ips: float | None, fell_back: bool = False) -> BenchRow:
    st = Stats(n=1, mean_ms=1.0, p50_ms=1.0, p90_ms=1.0, p99_ms=1.0, min_ms=1.0) if ips else None
    return BenchRow(backend=backend, batch_size=batch, ran_on="x", latency=st, images_per_s=ips, fell_back=fell_back)


def test_fastest_ignores_fall_backs_failures_and_other_batches():
    result = BenchResult(
        device="cpu",
        settings={"threads": 2},
        environment={},
        rows=[_row("a", 1, 100), _row("b", 1, 900, fell_back=True), _row("c", 1, None), _row("d", 8, 5000)],
    )
    assert ec.fastest(result, {"a": "A", "b": "B", "c": "C", "d": "D"}, 1) == "A"
    assert ec.fastest(result, {"a": "A"}, 64) is None


def test_passed_needs_its_own_check_beyond_onnxruntime_fp32():
    checks = [ec.EngineCheck(candidate="int8", choice="openvino", passed=True, check="ok")]
    assert ec.passed([], "int8", EngineChoice())  # checked at export
    assert ec.passed(checks, "int8", EngineChoice(engine="openvino", streams=2))  # streams do not change numbers
    assert not ec.passed(checks, "fp32", EngineChoice(engine="openvino"))


def test_record_writes_the_fastest_choice_per_batch_size(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model; only its hash is recorded")
    ov = EngineChoice(engine="openvino")
    rows = {"onnx": ("int8", EngineChoice()), "openvino": ("int8", ov), "onnx:other": ("fp32", EngineChoice())}
    result = BenchResult(
        device="cpu",
        settings={"threads": 2},
        environment={},
        rows=[
            _row("onnx", 1, 300),
            _row("openvino", 1, 200),
            _row("onnx", 64, 1000),
            _row("openvino", 64, 2000),
            _row("onnx:other", 64, 9999),
        ],  # fmt: skip
    )
    from cnnkit.runtime.cpu import cpu_flags, cpu_model

    malformed = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "models": 5}
    (tmp_path / "runtime.json").write_text(json.dumps(malformed))  # replaced, not merged
    path = ec.record(result, rows, "int8", model, (1, 64))
    entry = json.loads(path.read_text())["models"]["model.onnx"]
    assert entry["winners"] == {"1": EngineChoice().to_dict(), "64": ov.to_dict()}
    assert entry["measured"]["images_per_s"]["64"] == {"onnx": 1000.0, "openvino": 2000.0}


def test_engine_choices_on_cuda_are_onnxruntime_only_and_each_cpu_kind_comes_in_one_and_two_streams():
    assert ec.engine_choices("cuda") == [EngineChoice()]
    cpu = ec.engine_choices("cpu")
    assert EngineChoice() in cpu and all(c.streams in (1, 2) for c in cpu)


def test_the_csv_has_a_row_per_measurement_and_failures_say_why(tmp_path):
    import csv

    from cnnkit.bench.report import write_csv

    result = BenchResult(device="cpu", settings={}, environment={}, rows=[_row("onnx", 1, 100), _row("bad", 1, None)])
    result.rows[1] = BenchRow(backend="bad", batch_size=1, ran_on="-", latency=None, images_per_s=None, error="E: x")
    write_csv(result, tmp_path / "b.csv")
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [r["backend"] for r in rows] == ["onnx", "bad"]
    assert rows[0]["images_per_s"] == "100" and rows[0]["n"] == "1" and rows[1]["error"] == "E: x"


def test_inputs_are_sorted_by_kind_and_files_told_apart(tmp_path):
    from cnnkit.bench.inputs import file_tags, resolve_inputs
    from cnnkit.errors import ModelFileError

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    found = resolve_inputs([str(a), str(b)], need_checkpoint=False)
    assert found.onnx == [a, b] and found.checkpoint is None
    assert file_tags([a]) == [None] and file_tags([a, b]) == ["a.onnx", "b.onnx"]  # not cnnkit models: their names
    with pytest.raises(ModelFileError, match="not found"):
        resolve_inputs([str(tmp_path / "none.onnx")], need_checkpoint=False)


def test_a_row_with_batches_in_flight_counts_each_of_them_and_wins_only_for_such_callers(tmp_path):
    calls: list[str] = []
    two = _runner("openvino-2r", calls)
    two.in_flight = 2
    rows = Measurement(warmup=1, iters=4, min_time=0, rounds=2, events=None).rows(
        np.zeros((8, 1, 28, 28), np.uint8),
        {"one": _runner("one", calls), "openvino-2r": two},
        {},
        ["one", "openvino-2r"],
    )
    one_row, two_row = rows
    assert two_row.images_per_s == pytest.approx(16 / (two_row.latency.mean_ms / 1e3))  # both batches counted
    assert one_row.images_per_s == pytest.approx(8 / (one_row.latency.mean_ms / 1e3))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"only its hash is recorded")
    tput = EngineChoice(engine="openvino", requests=2)
    choices = {"onnx": ("int8", EngineChoice()), "openvino-2r": ("int8", tput)}
    result = BenchResult(
        device="cpu", settings={}, environment={}, rows=[_row("onnx", 64, 1000), _row("openvino-2r", 64, 2000)]
    )
    entry = json.loads(ec.record(result, choices, "int8", model, (64,)).read_text())["models"]["model.onnx"]
    assert entry["winners"] == {"64": EngineChoice().to_dict()}  # a lone caller never gets the in-flight route
    assert entry["in_flight_winners"] == {"64": tput.to_dict()}
