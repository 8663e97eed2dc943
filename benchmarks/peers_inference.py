"""cnnkit's best (what `cnnkit optimize --select` chose, run by `--engine auto`, for one caller and for callers with
batches in flight as `cnnkit serve` is) against what a user would run instead on the same files, the same threads
and the same batches: plain ONNX Runtime (one session; two single-threaded sessions with a batch in flight each),
OpenVINO as it comes (its default precision hint, whatever that is on this CPU) on cnnkit's fp32 and INT8 files,
OpenVINO's THROUGHPUT hint with two requests in flight (AsyncInferQueue), and OpenVINO with an INT8 model from
NNCF's post-training quantization (512 training images, as many as cnnkit's INT8 export calibrates on), in LATENCY
and THROUGHPUT mode.

A configuration "with 2 in flight" runs two batches at once in each timed call (images/s counts both): what a
server with concurrent clients gets; the others run one batch per call: what one caller gets.

    bash benchmarks/peers.sh            (makes the peer venv and the optimized run, then runs this)
    python benchmarks/peers_inference.py RUN [--rounds 30] [--seconds 0.15] [--batch-sizes 1,64,256]

Runs in benchmarks/.venv-peers (numpy, onnxruntime, openvino, nncf; cnnkit's runtime from src/ on PYTHONPATH,
no torch). Timed in alternating rounds: every configuration once per round, at each batch size; medians across
rounds, and the ratio to the fastest peer paired round by round. Accuracy of every configuration on the bundled
sample's 1,000 test images. Writes benchmarks/results/peers_inference_cpu_<kind>.json, one per kind of CPU (its
instruction-set flags: avx2, avx512-vnni, avx512-vnni-bf16, amx).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

Run = Callable[[np.ndarray], np.ndarray]
SAMPLE = Path(__file__).resolve().parents[1] / "src" / "cnnkit" / "resources" / "mnist_sample.npz"


def sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration images: the first 512 training images, test images, test labels) as uint8 NCHW."""
    data = np.load(SAMPLE)
    calibration = data["train_images"][:512].reshape(-1, 1, 28, 28)
    return calibration, data["test_images"].reshape(-1, 1, 28, 28), data["test_labels"]


def ort_session(path: Path, threads: int) -> Run:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def ov_compiled(model: object, threads: int) -> tuple[Run, str]:
    """OpenVINO as it comes: only the thread count set (the precision hint left at OpenVINO's default)."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    return run, hint.to_string() if hasattr(hint, "to_string") else str(hint)


def ov_in_flight(model: object, threads: int, requests: int = 2) -> tuple[Run, str]:
    """OpenVINO's THROUGHPUT hint with `requests` infer requests in an AsyncInferQueue: each call runs that many
    copies of the batch at once (a server's concurrent batches)."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": requests}
    )
    queue = ov.AsyncInferQueue(compiled, requests)
    outs: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, i: outs.__setitem__(i, request.get_output_tensor(0).data.copy()))
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")

    def run(x: np.ndarray) -> np.ndarray:
        for i in range(requests):
            queue.start_async({0: x}, i)
        queue.wait_all()
        return outs[0]

    return run, hint.to_string() if hasattr(hint, "to_string") else str(hint)


def in_threads(runs: list[Run]) -> Run:
    """Each call runs the batch on every one of `runs` at once, from its own thread (concurrent callers)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=len(runs))

    def run(x: np.ndarray) -> np.ndarray:
        return [f.result() for f in [pool.submit(r, x) for r in runs]][0]

    return run


def cpu_kind(flags: list[str]) -> str:
    """The instruction sets that pick INT8 and bf16 kernels, as a file-name tag."""
    if "amx_tile" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni" + ("-bf16" if "avx512_bf16" in flags else "")
    return "avx2-vnni" if "avx_vnni" in flags else "avx2"


IN_FLIGHT = 2  # batches the "in flight" configurations run at once
CONCURRENT = " (2 in flight)"


def nncf_int8(path: Path, calibration: np.ndarray) -> object:
    """NNCF's default post-training quantization of the fp32 ONNX model read by OpenVINO."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(path))
    batches = [calibration[i : i + 1] for i in range(len(calibration))]
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))


def configurations(run: Path, threads: int, calibration: np.ndarray) -> dict[str, tuple[Run, str]]:
    from cnnkit.runtime import Classifier

    cand = run / "candidates"
    fp32, fp32_folded, int8 = (
        cand / "fp32" / "model.onnx",
        cand / "fp32-folded" / "model.onnx",
        cand / "int8-folded" / "model.int8.onnx",
    )
    best = Classifier(run / "model.onnx", device="cpu", intra_op_threads=threads, max_batch=1 << 20)
    plan = ", ".join(f"{p['label']} from batch {p['from_batch']}" for p in best.runs_on())
    served = Classifier(run / "model.onnx", device="cpu", intra_op_threads=threads, max_batch=1 << 20, serving=True)
    served_plan = ", ".join(f"{p['label']} from batch {p['from_batch']}" for p in served.runs_on())
    configs: dict[str, tuple[Run, str]] = {
        "cnnkit (optimize --select, engine auto)": (best.logits, f"{best.info.variant}: {plan}"),
        "cnnkit serving (engine auto, concurrent)" + CONCURRENT: (
            in_threads([served.logits] * IN_FLIGHT),
            f"{served.info.variant}: {served_plan}; two caller threads, as serve's batcher keeps "
            f"{served.in_flight} batch(es) running",
        ),
        "onnxruntime, fp32 export": (ort_session(fp32, threads), "ONNX Runtime defaults, fp32"),
        "onnxruntime, cnnkit int8 file": (ort_session(int8, threads), "ONNX Runtime defaults, int8"),
        "onnxruntime, 2 sessions x 1 thread, cnnkit int8 file" + CONCURRENT: (
            in_threads([ort_session(int8, max(1, threads // IN_FLIGHT)) for _ in range(IN_FLIGHT)]),
            "two ONNX Runtime sessions, one thread each, a batch in flight on each",
        ),
    }
    for name, path in (("fp32 export", fp32), ("cnnkit fp32-folded file", fp32_folded), ("cnnkit int8 file", int8)):
        fn, hint = ov_compiled(str(path), threads)
        configs[f"openvino default, {name}"] = (fn, f"OpenVINO defaults (precision hint {hint})")
    fn, hint = ov_in_flight(str(int8), threads)
    configs["openvino THROUGHPUT, cnnkit int8 file" + CONCURRENT] = (fn, f"THROUGHPUT hint, 2 requests (hint {hint})")
    nncf_model = nncf_int8(fp32, calibration)
    fn, hint = ov_compiled(nncf_model, threads)
    configs["openvino + nncf int8 (512 images)"] = (fn, f"NNCF PTQ defaults, OpenVINO hint {hint}")
    fn, hint = ov_in_flight(nncf_model, threads)
    configs["openvino THROUGHPUT + nncf int8" + CONCURRENT] = (fn, "NNCF PTQ defaults, THROUGHPUT, 2 requests")
    return configs


def rate(fn: Run, x: np.ndarray, seconds: float) -> tuple[float, list[float]]:
    """(images/s, per-call seconds) over about `seconds`."""
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return len(x) * len(times) / sum(times), times


def per_call(name: str) -> int:
    """Batches one call of configuration `name` runs."""
    return IN_FLIGHT if name.endswith(CONCURRENT) else 1


def settle(fn: Run, x: np.ndarray) -> None:
    """Let the previous configuration's threads go idle (ONNX Runtime's spin after each call for a while, taking
    the cores from whatever runs next), then three untimed calls of this one."""
    time.sleep(0.05)
    for _ in range(3):
        fn(x)


def measure(configs: dict[str, tuple[Run, str]], batches: list[int], rounds: int, seconds: float) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for bs in batches:
        x = rng.integers(0, 256, (bs, 1, 28, 28), dtype=np.uint8)
        for fn, _ in configs.values():  # warm-up, untimed
            rate(fn, x, 0.2)
        rates: dict[str, list[float]] = {n: [] for n in configs}
        calls: dict[str, list[float]] = {n: [] for n in configs}
        for r in range(rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))  # alternate who goes first
            for name in order:
                settle(configs[name][0], x)
                ips, times = rate(configs[name][0], x, seconds)
                rates[name].append(ips * per_call(name))
                calls[name] += times
        peers = [n for n in configs if not n.startswith("cnnkit")]
        fastest = max(peers, key=lambda n: statistics.median(rates[n]))
        alike = {  # the fastest peer called as this configuration is: one batch per call, or two in flight
            kind: max((n for n in peers if per_call(n) == kind), key=lambda n: statistics.median(rates[n]))
            for kind in {per_call(n) for n in peers}
        }
        for name in configs:
            med = statistics.median(rates[name])
            paired = [a / b for a, b in zip(rates[name], rates[fastest])]  # same round, side by side
            same = alike.get(per_call(name), fastest)
            paired_alike = [a / b for a, b in zip(rates[name], rates[same])]
            rows.append(
                {
                    "config": name,
                    "batch_size": bs,
                    "images_per_s": round(med, 1),
                    "images_per_s_rounds": [round(v, 1) for v in rates[name]],
                    "p50_ms": round(1000 * float(np.percentile(calls[name], 50)), 4),
                    "p99_ms": round(1000 * float(np.percentile(calls[name], 99)), 4),
                    "batches_per_call": per_call(name),
                    "fastest_peer": fastest,
                    "vs_fastest_peer": round(statistics.median(paired), 3),
                    "vs_fastest_peer_iqr": [round(float(q), 3) for q in np.percentile(paired, [25, 75])],
                    "fastest_peer_called_alike": same,
                    "vs_fastest_peer_called_alike": round(statistics.median(paired_alike), 3),
                }
            )
            print(bs, name, rows[-1]["images_per_s"], rows[-1]["p50_ms"], rows[-1]["vs_fastest_peer"], flush=True)
    return rows


def accuracy(configs: dict[str, tuple[Run, str]], images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    out = {}
    for name, (fn, _) in configs.items():  # one batch per call: the in-flight runs return their first batch's
        pred = np.concatenate([fn(images[i : i + 100]) for i in range(0, len(images), 100)]).argmax(1)
        out[name] = round(100 * float((pred == labels).mean()), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run folder after `cnnkit optimize RUN --select`")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=0.15)
    ap.add_argument("--batch-sizes", default="1,64,256")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    calibration, test_images, test_labels = sample()
    configs = configurations(a.run, a.threads, calibration)
    acc = accuracy(configs, test_images, test_labels)
    print("accuracy", acc, flush=True)
    rows = measure(configs, [int(b) for b in a.batch_sizes.split(",")], a.rounds, a.seconds)
    import onnxruntime
    import openvino

    save(
        f"peers_inference_cpu_{cpu_kind(machine()['cpu_flags'])}.json",
        {
            "machine": machine(),
            "command": "bash benchmarks/peers.sh (python benchmarks/peers_inference.py " + " ".join(sys.argv[1:]) + ")",
            "threads": a.threads,
            "versions": {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__},
            "what_runs": {n: d for n, (_, d) in configs.items()},
            "accuracy_percent": acc,
            "rows": rows,
            "method": f"{a.rounds} alternating rounds of {a.seconds} s per configuration and batch size, each after "
            "50 ms idle and 3 untimed calls (ONNX Runtime's spinning threads otherwise slow whatever runs next); "
            "images/s: "
            "median over rounds; p50/p99 over every timed call; vs_fastest_peer: the median over rounds of this "
            "configuration's images/s over the fastest peer's (the non-cnnkit configuration with the highest median) "
            "in the same round (its interquartile range over rounds beside it), and vs_fastest_peer_called_alike the "
            "same against the fastest peer called alike (one batch per call, or two in flight)",
        },
    )


if __name__ == "__main__":
    main()
