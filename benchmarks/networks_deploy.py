"""Each network the whole way, with no code beyond its name or module path: the seed CNN, torchvision's resnet18 and
mobilenet_v3_small, and a user's own module (tests/usernets/tiny.py), each trained on an image folder (the photo
patches of make_photo_patches.py, 32x32 RGB), exported in every format and verified, optimized (every candidate
gated, INT8 on the real test split; ONNX and torch-side candidates benchmarked side by side, AOTInductor included;
the fastest ONNX variant selected) and served (`cnnkit serve` on the selected file; its labels compared with
`cnnkit predict`'s). Writes results/networks_deploy_cpu.json.

    python benchmarks/networks_deploy.py --photos DIR [--archs seed,resnet18,mobilenet_v3_small,usernets.tiny:build]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

TESTS = Path(__file__).resolve().parents[1] / "tests"
EPOCHS = {"seed": 10, "resnet18": 2, "mobilenet_v3_small": 10}  # what each reaches a useful accuracy in here
DEFAULT_EPOCHS = 10


def cnnkit(*args: str, env: dict, ok: tuple[int, ...] = (0,)) -> dict:
    r = subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, env=env)
    if r.returncode not in ok:
        raise SystemExit(f"cnnkit {' '.join(args)} failed:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return json.loads(r.stdout) if "--json" in args and r.stdout.strip() else {}


def served_labels(model: Path, images: list[Path], arch: str, env: dict) -> list[str]:
    """`cnnkit serve MODEL` on a kernel-picked port; the labels /v1/predict gives for `images`."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", str(model), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        url = None
        for line in iter(proc.stdout.readline, b""):
            m = re.search(rb"http://(127\.0\.0\.1:\d+)", line)
            if m:
                url = "http://" + m.group(1).decode()
                break
        if url is None:
            raise SystemExit(f"serve {arch}: no address printed")
        for _ in range(600):
            try:
                if urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        labels = []
        for path in images:
            req = urllib.request.Request(url + "/v1/predict", data=path.read_bytes(),
                                         headers={"content-type": "image/png" if path.suffix == ".png" else
                                                  "image/jpeg"})  # fmt: skip
            labels.append(json.loads(urllib.request.urlopen(req, timeout=30).read())["predictions"][0]["label"])
        return labels
    finally:
        proc.terminate()
        proc.wait(30)


def one(arch: str, photos: Path, work: Path, min_time: float, env: dict) -> dict:
    name = arch.replace(":", "_").replace(".", "_")
    run = work / name
    trust = ["--arch", arch] if ":" in arch else []
    t0 = time.perf_counter()
    epochs = EPOCHS.get(arch, DEFAULT_EPOCHS)
    trained = cnnkit("train", "--data-dir", str(photos), "--arch", arch, "--out", str(run), "--epochs", str(epochs),
                     "--recipe", "default", "--json", env=env)  # fmt: skip
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    exported = cnnkit("export", str(run), "--format", "all", *trust, "--json", env=env)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    opt = cnnkit("optimize", str(run), "--batch-sizes", "1,64", "--min-time", str(min_time), "--aoti", "--select",
                 "--target-batch", "64", *trust, "--json", "-", env=env)  # fmt: skip
    optimize_s = time.perf_counter() - t0
    images = sorted(p for p in photos.rglob("*") if p.suffix in (".png", ".jpg"))[::97][:16]
    predicted = cnnkit("predict", str(run / "model.onnx"), *map(str, images), "--json", env=env)
    served = served_labels(run / "model.onnx", images, arch, env)
    ok = [r for r in opt["bench"]["rows"] if r["latency"]]
    return {
        "arch": arch,
        "epochs": len(trained["epochs"]),
        "test_accuracy": trained["test_accuracy"],
        "train_s": train_s,
        "export_all": {
            "seconds": export_s,
            "ok": exported["ok"],
            "parity_max_abs": {
                b["backend"]: max((c["max_abs"] for c in b["cases"] if c["max_abs"] is not None), default=None)
                for b in exported["parity"]["backends"]
            },
        },
        "optimize_s": optimize_s,
        "candidates": {c["name"]: {"passed": c["passed"], "check": c["check"]} for c in opt["candidates"]},
        "winners": opt["winners"],
        "selected": opt["selected"],
        "batch1_p50_ms": {r["backend"]: r["latency"]["p50_ms"] for r in ok if r["batch_size"] == 1},
        "batch64_images_per_s": {r["backend"]: r["images_per_s"] for r in ok if r["batch_size"] == 64},
        "served_equals_predict": served == [r["label"] for r in predicted["results"]],
        "served_images": len(served),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--archs", default="seed,resnet18,mobilenet_v3_small,usernets.tiny:build")
    ap.add_argument("--min-time", type=float, default=0.5)
    a = ap.parse_args()
    env_machine = machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CNNKIT_DATA_DIR": str(Path(tmp) / "cache"), "CNNKIT_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}  # fmt: skip
        for arch in a.archs.split(","):
            results.append(one(arch, a.photos, Path(tmp), a.min_time, env))
            r = results[-1]
            print(arch, f"acc {r['test_accuracy']:.3f}", "winners", r["winners"], "selected", r["selected"], flush=True)
            save("networks_deploy_cpu.json", {"machine": env_machine, "networks": results})  # after each network


if __name__ == "__main__":
    main()
