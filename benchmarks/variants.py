"""Exported variants side by side: size, accuracy, agreement with fp32, latency and throughput.

Trains the default recipe on the bundled sample (or takes --run), runs `cnnkit optimize` on it (every candidate
exported, verified against its gate and benchmarked in one process, alternating rounds), evaluates each passing
ONNX file on the sample's 1,000 test images, and writes benchmarks/results/variants_<device>.json. Ratios are
against the unfolded fp32 export measured in the same run.

    python benchmarks/variants.py [--run RUN] [--device cpu] [--min-time 2.0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="a run folder with a checkpoint (default: train one)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-sizes", default="1,64,256")
    ap.add_argument("--min-time", type=float, default=2.0)
    a = ap.parse_args()

    from cnnkit.bench.evaluate import evaluate
    from cnnkit.bench.optimize import OptimizeOptions, optimize
    from cnnkit.data.datasets import load_sample
    from cnnkit.export.compare import Gate
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.run import train

    with tempfile.TemporaryDirectory(prefix="cnnkit-variants-") as tmp:
        run = a.run
        if run is None:
            run = Path(tmp) / "run"
            train(load_sample(), TrainConfig(device=a.device), run, progress=False)
        batch_sizes = tuple(int(b) for b in a.batch_sizes.split(","))
        options = OptimizeOptions(batch_sizes=batch_sizes, min_time=a.min_time, gate=Gate(device=a.device))
        result = optimize(run, options)
        assert result.bench is not None, "no candidate passed"
        rows = result.bench.rows
        base = {r.batch_size: r for r in rows if r.backend == "onnx:fp32"}
        table = []
        for cand in result.candidates:
            entry = {"variant": cand.name, "passed": cand.passed, "check": cand.check, "row": cand.row}
            if cand.file:
                entry["size_bytes"] = Path(cand.file).stat().st_size
            if cand.passed and cand.file and cand.file.endswith(".onnx"):
                ev = evaluate(cand.file, device=a.device)
                entry["accuracy"] = ev.accuracy
            for r in rows:
                if r.backend != cand.row or r.latency is None or r.batch_size not in base:
                    continue
                b = base[r.batch_size]
                assert b.latency is not None and b.images_per_s
                entry[f"batch{r.batch_size}"] = {
                    "p50_ms": r.latency.p50_ms,
                    "images_per_s": r.images_per_s,
                    "p50_vs_fp32": b.latency.p50_ms / r.latency.p50_ms,  # > 1: lower latency
                    "throughput_vs_fp32": r.images_per_s / b.images_per_s,
                }
            table.append(entry)
        save(
            f"variants_{a.device}.json",
            {
                "machine": machine(),
                "environment": result.bench.environment,
                "settings": result.bench.settings,
                "variants": table,
                "winners": result.winners,
                "bench_rows": result.bench.to_dict()["rows"],
            },
        )
        for e in table:
            size = f"{e.get('size_bytes', 0) / 1e6:6.2f} MB"
            parts = [f"{e['variant']:<20}", "PASS" if e["passed"] else "----", size]
            if "accuracy" in e:
                parts.append(f"acc {e['accuracy']:.2%}")
            for bs in batch_sizes:
                if f"batch{bs}" in e:
                    m = e[f"batch{bs}"]
                    parts.append(
                        f"b{bs}: p50 {m['p50_ms']:.3f} ms ({m['p50_vs_fp32']:.2f}x), "
                        f"{m['images_per_s']:,.0f} img/s ({m['throughput_vs_fp32']:.2f}x)"
                    )
            print("  ".join(parts))


if __name__ == "__main__":
    main()
