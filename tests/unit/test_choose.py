"""The engine choice survives a noisy machine: decided on the medians of alternated rounds, ties (within the paired
spread) going to the simpler route. Timings injected as a bench run would record them."""

from __future__ import annotations

from cnnkit.bench import choose
from cnnkit.bench import engine_choices as ec
from cnnkit.bench.results import BenchResult, BenchRow, summarize
from cnnkit.runtime import EngineChoice


def row(backend: str, batch: int, rounds: list[float]) -> BenchRow:
    seconds = [batch / r for r in rounds]
    mean = sum(seconds) / len(seconds)
    return BenchRow(backend=backend, batch_size=batch, ran_on="cpu", latency=summarize(seconds),
                    images_per_s=batch / mean, rounds_images_per_s=rounds)  # fmt: skip


def result(*rows: BenchRow) -> BenchResult:
    return BenchResult(device="cpu", settings={}, environment={}, rows=list(rows))


def test_a_route_faster_only_in_one_noisy_round_is_not_chosen():
    # the machine was busy during one round of ONNX Runtime's: its overall rate falls below OpenVINO's; its median
    # (and every other round) does not
    steady = row("openvino:int8", 1, [3000, 3020, 2990, 3010, 3000])
    spiky = row("onnx:int8", 1, [4000, 4100, 1000, 4000, 4050])
    assert steady.images_per_s > spiky.images_per_s
    decision = choose.decide(result(spiky, steady), ["onnx:int8", "openvino:int8"], 1)
    assert decision.chosen == decision.leader == "onnx:int8" and not decision.tied
    rows = {"onnx:int8": ("int8", EngineChoice()), "openvino:int8": ("int8", EngineChoice(engine="openvino"))}
    assert ec.fastest(result(spiky, steady), rows, 1) == ("int8", EngineChoice())


def test_routes_within_the_spread_are_a_tie_that_goes_to_the_simpler_route():
    ort = row("onnx", 64, [2600, 2700, 2650, 2580, 2690])
    ov = row("openvino", 64, [2680, 2640, 2700, 2620, 2710])  # the higher median, by less than the spread
    decision = choose.decide(result(ov, ort), ["onnx", "openvino"], 64)
    assert decision.leader == "openvino" and decision.chosen == "onnx" and "tied with openvino" in decision.describe()
    clearly = row("openvino", 64, [3300, 3350, 3280, 3320, 3310])  # 25% ahead in every round: no tie
    assert choose.decide(result(clearly, ort), ["onnx", "openvino"], 64).chosen == "openvino"


def test_the_same_rates_in_another_order_give_the_same_choice_and_a_scattered_leader_is_called_noisy():
    a, b = row("onnx", 8, [1000, 1010, 990, 1005, 995]), row("openvino", 8, [1300, 1280, 1310, 1290, 1305])
    assert choose.decide(result(a, b), ["onnx", "openvino"], 8) == choose.decide(result(b, a), ["onnx", "openvino"], 8)
    wild = row("openvino", 8, [500, 2500, 1400, 900, 2000])
    assert choose.decide(result(a, wild), ["onnx", "openvino"], 8).noisy
