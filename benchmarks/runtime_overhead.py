"""Overhead of `cnnkit.runtime.Classifier` over a bare `InferenceSession.run` on the same input.

    python benchmarks/runtime_overhead.py [--model runs/demo/model.onnx] [--rounds 20] [--iters 500]

Both paths use the same session (so the same graph, threads and allocations); they alternate in rounds
so machine noise hits both alike. Reported per batch size: median of per-round medians for
`session.run`, `Classifier.logits` and `Classifier.predict`, the absolute overhead in microseconds and
the relative overhead. Writes benchmarks/results/runtime_overhead.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import ensure_model, machine, save


def per_call(fn, iters: int) -> float:
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return float(np.median(t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch-sizes", default="1,64")
    a = ap.parse_args()
    from cnnkit.runtime import Classifier

    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or ensure_model(Path(tmp)) / "model.onnx"
        clf = Classifier(model, device="cpu")
        results = {}
        for bs in [int(b) for b in a.batch_sizes.split(",")]:
            x = np.random.default_rng(0).integers(0, 256, (bs, 1, 28, 28), dtype=np.uint8)
            feeds = {clf.info.input_name: x}
            paths = {  # the lambdas run within this iteration: binding x and feeds late is what is meant
                "session_run": lambda: clf.session.run([clf.info.output_name], feeds),  # noqa: B023
                "classifier_logits": lambda: clf.logits(x),  # noqa: B023
                "classifier_predict": lambda: clf.predict(x),  # noqa: B023
            }
            iters = max(20, a.iters // bs) if bs > 1 else a.iters
            for fn in paths.values():
                per_call(fn, iters // 4)  # warm-up
            med = {k: [] for k in paths}
            for r in range(a.rounds):
                order = list(paths)[r % 3 :] + list(paths)[: r % 3]
                for k in order:
                    med[k].append(per_call(paths[k], iters))
            base = float(np.median(med["session_run"]))
            row = {"session_run_us": base * 1e6}
            for k in ("classifier_logits", "classifier_predict"):
                v = float(np.median(med[k]))
                row[f"{k}_us"] = v * 1e6
                row[f"{k}_overhead_us"] = (v - base) * 1e6
                row[f"{k}_overhead_pct"] = (v / base - 1) * 100
            results[str(bs)] = row
            print(f"batch {bs}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))
    save(
        "runtime_overhead.json",
        {
            "machine": machine(),
            "providers": clf.providers,
            "rounds": a.rounds,
            "results": results,
            "targets": {"batch_64_overhead_pct_max": 5, "batch_1_overhead_us_max": 20},
        },
    )


if __name__ == "__main__":
    main()
