"""Which engine wins depends on the network: the seed CNN, torchvision's resnet18 and mobilenet_v3_small, each
trained briefly on an image folder (the photo patches of make_photo_patches.py, 32x32 RGB), exported in every
format (ONNX, TorchScript, torch.export, AOTInductor), verified, and benchmarked side by side in one bench run per
network (eager, TorchScript, ExportedProgram, AOTInductor, ONNX Runtime, OpenVINO; alternating rounds).
Writes results/networks_cpu.json.

    python benchmarks/networks.py --photos DIR [--archs seed,resnet18,mobilenet_v3_small] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save


def cnnkit(*args: str, env: dict) -> dict:
    r = subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"cnnkit {' '.join(args)} failed:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return json.loads(r.stdout) if "--json" in args else {}


def one(arch: str, photos: Path, work: Path, steps: int, min_time: float, env: dict) -> dict:
    run = work / arch
    t0 = time.perf_counter()
    trained = cnnkit("train", "--data-dir", str(photos), "--arch", arch, "--out", str(run), "--max-steps",
                     str(steps), "--recipe", "default", "--json", env=env)  # fmt: skip
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cnnkit("export", str(run), "--format", "all", env=env)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cnnkit("export", str(run), "--format", "aoti", env=env)
    aoti_s = time.perf_counter() - t0
    files = [str(run / n) for n in ("model.onnx", "model.ts", "model.pt2", "model.aoti.pt2")]
    verify = cnnkit("verify", *files, "--json", env=env)
    bench = cnnkit("bench", str(run), *files[1:], "--backends", "eager,torchscript,exported,aoti,onnx,openvino",
                   "--batch-sizes", "1,64", "--min-time", str(min_time), "--json", "-", env=env)  # fmt: skip
    ok = [r for r in bench["rows"] if r["latency"]]
    return {
        "arch": arch,
        "after_steps": {"steps": steps, "test_accuracy": trained["epochs"][-1]["test_accuracy"]},
        "train_s": train_s,
        "export_all_s": export_s,
        "aoti_compile_s": aoti_s,
        "parity": {
            b["backend"]: {
                "passed": b["passed"],
                "max_abs": max((c["max_abs"] for c in b["cases"] if c["max_abs"] is not None), default=None),
            }
            for b in verify["backends"]
        },
        "batch1_p50_ms": {r["backend"]: r["latency"]["p50_ms"] for r in ok if r["batch_size"] == 1},
        "batch64_images_per_s": {r["backend"]: r["images_per_s"] for r in ok if r["batch_size"] == 64},
        "failed_rows": {r["backend"]: r["error"] for r in bench["rows"] if r["error"]},
        "bench_rows": bench["rows"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--archs", default="seed,resnet18,mobilenet_v3_small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--min-time", type=float, default=1.0)
    a = ap.parse_args()
    env_machine = machine()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CNNKIT_DATA_DIR": str(Path(tmp) / "cache"), "CNNKIT_OFFLINE": "1"}
        results = [one(arch, a.photos, Path(tmp), a.steps, a.min_time, env) for arch in a.archs.split(",")]
    save("networks_cpu.json", {"machine": env_machine, "networks": results})
    for r in results:
        print(r["arch"], "p50@1", r["batch1_p50_ms"], "img/s@64", r["batch64_images_per_s"])


if __name__ == "__main__":
    main()
