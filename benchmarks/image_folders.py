"""Image folders at scale, and a user's RGB photos through every command.

1. Fashion-MNIST from Debian's `dataset-fashion-mnist`, written out as an image-folder tree of 70,000 PNGs
   (train/<n-class>/, test/<n-class>/): the first decode's time, a second run's load from the cache, the loader's
   peak RSS against the cache's size (each in a fresh process), the decoded pixels against the IDX files', and test
   accuracy of the same recipe trained from the PNG tree and from the IDX files (runs alternate).
2. An RGB set of photo patches (benchmarks/make_photo_patches.py, from scikit-image's wheel): train with nothing but
   --data-dir, export fp32 and INT8, verify (parity and the INT8 accuracy gate on the real test split), optimize,
   predict, serve; the served labels against predict's.

    bash benchmarks/image_folders.sh     # installs what it needs, then runs this
    python benchmarks/image_folders.py --photos DIR [--epochs 5] [--seeds 0]
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

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
LOADER = """
import json, os, sys, threading, time
from pathlib import Path


def status(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_rss():
    # this process and its descendants (the forkserver and the decode workers it starts), in kB
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    mine, grew = {os.getpid()}, True
    while grew:
        more = {p for p, pp in parents.items() if pp in mine} - mine
        grew, mine = bool(more), mine | more
    total = 0
    for p in mine:
        try:
            total += status(p, "VmRSS")
        except OSError:
            pass
    return total


peak = [0]
done = threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], tree_rss())
        time.sleep(0.05)


from cnnkit.data.datasets import load_dataset
from cnnkit.data.imagefolder import FolderOptions
base = status("self", "VmRSS")
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
ds = load_dataset(data_dir=sys.argv[1], folder=FolderOptions()).dataset
fingerprint = ds.fingerprint  # reads every pixel, as training's first copy does
seconds = time.perf_counter() - t0
done.set()
print(json.dumps({"seconds": seconds, "rss_after_imports_kb": base, "rss_peak_kb": status("self", "VmHWM"),
                  "tree_rss_peak_kb": peak[0], "cache_bytes": int(ds.train_images.nbytes + ds.test_images.nbytes),
                  "train": len(ds.train_labels), "test": len(ds.test_labels), "geometry": ds.geometry.to_dict()}))
"""


def cnnkit(*args: str, env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, env=env, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit(f"cnnkit {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r


def write_png_tree(out: Path) -> float:
    """The Debian IDX files as train/ and test/ trees of PNGs; class folders `0-T-shirt-top`, ... in label order."""
    from PIL import Image

    from cnnkit.data.datasets import FASHION, load_idx_dir

    ds = load_idx_dir(FASHION_DIR, "fashion-mnist", FASHION)
    names = [f"{i}-{n.replace('/', '-').replace(' ', '-')}" for i, n in enumerate(FASHION)]
    t0 = time.perf_counter()
    for split, x, y in (("train", ds.train_images, ds.train_labels), ("test", ds.test_images, ds.test_labels)):
        for name in names:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x[:, 0], y)):
            Image.fromarray(img).save(out / split / names[label] / f"{i:05d}.png")
    return time.perf_counter() - t0


def fashion(work: Path, epochs: int, seeds: list[int]) -> dict:
    tree = work / "fashion-png"
    write_s = write_png_tree(tree)
    env = {**os.environ, "CNNKIT_DATA_DIR": str(work / "cache"), "CNNKIT_OFFLINE": "1"}
    loads = []
    for _ in range(2):  # cold (decodes), then warm (the cache)
        r = subprocess.run([sys.executable, "-c", LOADER, str(tree)], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-2000:])
        loads.append(json.loads(r.stdout.strip().splitlines()[-1]))
    exact = _same_pixels_as_idx(tree, env)
    runs = []
    for seed in seeds:
        for source in ("png", "idx"):  # alternating
            data = str(tree) if source == "png" else str(FASHION_DIR)
            args = ["train", "--data-dir", data, "--recipe", "default", "--epochs", str(epochs), "--patience", "0",
                    "--flip", "--seed", str(seed), "--out", str(work / f"run-{source}-{seed}"), "--json"]  # fmt: skip
            t0 = time.perf_counter()
            result = json.loads(cnnkit(*args, env=env).stdout)
            runs.append({"source": source, "seed": seed, "seconds": time.perf_counter() - t0,
                         "test_accuracy": result["epochs"][-1]["test_accuracy"]})  # fmt: skip
    acc = {
        s: float(np.mean([r["test_accuracy"] for r in runs if r["source"] == s] or [np.nan])) for s in ("png", "idx")
    }
    cold, warm = loads
    return {
        "files": cold["train"] + cold["test"],
        "png_tree_write_s": write_s,
        "first_decode_s": cold["seconds"],
        "cached_load_s": warm["seconds"],
        "cache_mib": cold["cache_bytes"] / 2**20,
        "rss_after_imports_mib": cold["rss_after_imports_kb"] / 1024,
        "loader_rss_peak_mib": cold["rss_peak_kb"] / 1024,
        "loader_rss_growth_mib": (cold["rss_peak_kb"] - cold["rss_after_imports_kb"]) / 1024,
        "loader_and_workers_rss_peak_mib": cold["tree_rss_peak_kb"] / 1024,
        "cached_load_rss_peak_mib": warm["rss_peak_kb"] / 1024,
        "cached_load_rss_growth_mib": (warm["rss_peak_kb"] - warm["rss_after_imports_kb"]) / 1024,
        "geometry": cold["geometry"],
        "pixels_equal_idx": exact,
        "runs": runs,
        "test_accuracy_png": acc["png"] if runs else None,
        "test_accuracy_idx": acc["idx"] if runs else None,
        "accuracy_difference_points": 100 * (acc["png"] - acc["idx"]) if runs else None,
        "targets": {"accuracy_within_points": 0.3, "first_decode_s": 90, "cached_load_s": 3, "rss_vs_cache": 1.5},
    }


def _same_pixels_as_idx(tree: Path, env: dict) -> bool:
    """The cache's training pixels, class by class, are exactly the IDX images of that class (PNG is lossless)."""
    os.environ["CNNKIT_DATA_DIR"] = env["CNNKIT_DATA_DIR"]
    from cnnkit.data.datasets import FASHION, load_dataset, load_idx_dir

    png = load_dataset(data_dir=tree).dataset
    idx = load_idx_dir(FASHION_DIR, "fashion-mnist", FASHION)
    for k in range(10):
        a, b = png.train_images[png.train_labels == k], idx.train_images[idx.train_labels == k]
        if a.shape != b.shape or not np.array_equal(a, b):  # files are named by index: the same order within a class
            return False
    return True


def photos(root: Path, work: Path) -> dict:
    """The RGB path with nothing but --data-dir, each step through the CLI."""
    env = {**os.environ, "CNNKIT_DATA_DIR": str(work / "cache"), "CNNKIT_OFFLINE": "1"}
    run = work / "photos-run"
    t0 = time.perf_counter()
    trained = json.loads(cnnkit("train", "--data-dir", str(root), "--out", str(run), "--json", env=env).stdout)
    train_s = time.perf_counter() - t0
    cnnkit("export", str(run), "--format", "onnx", env=env)
    verify = json.loads(cnnkit("verify", str(run / "model.onnx"), "--json", env=env).stdout)
    fp32_max = max(c["max_abs"] for c in verify["backends"][0]["cases"] if c["max_abs"] is not None)
    int8 = subprocess.run([sys.executable, "-m", "cnnkit", "export", str(run), "--precision", "int8", "--out",
                           str(work / "int8")], capture_output=True, text=True, env=env)  # fmt: skip
    int8_said = [ln for ln in int8.stdout.splitlines() if ln.startswith(("PASS", "FAIL"))]
    opt = json.loads(cnnkit("optimize", str(run), "--json", "-", env=env).stdout)
    candidates = {c["name"]: {"passed": c["passed"], "check": c["check"]} for c in opt["candidates"]}
    files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg"))[::97][:32]
    predicted = json.loads(cnnkit("predict", str(run / "model.onnx"), *map(str, files), "--json", env=env).stdout)
    served = _served_labels(run / "model.onnx", files, env)
    labels = [r["label"] for r in predicted["results"]]
    return {
        "dataset": {k: v for k, v in trained["dataset"].items() if k not in ("sha256", "skipped_files")},
        "train_s": train_s,
        "test_accuracy": trained["epochs"][-1]["test_accuracy"],
        "epochs": len(trained["epochs"]),
        "recipe": trained.get("tuning", {}),
        "fp32_parity_max_abs": fp32_max,
        "verify_passed": verify["passed"],
        "int8_export_exit_code": int8.returncode,
        "int8_export_verdict": int8_said,
        "optimize_candidates": candidates,
        "optimize_winners": opt["winners"],
        "predict_files": len(files),
        "served_labels_equal_predict": served == labels,
        "targets": {
            "fp32_parity_max_abs": 1e-4,
            "int8_accuracy_drop_points": 0.5,
            "int8_gate": "cnnkit's default: "
            "top-1 agreement >= 99.5% and accuracy drop <= 0.3 points on the real test split",
        },
    }


def _served_labels(model: Path, files: list[Path], env: dict) -> list[str]:
    import httpx

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    os.environ.update(env)
    from helpers import start_server

    proc, url = start_server(str(model))
    try:
        uploads = [("f", (p.name, p.read_bytes(), "application/octet-stream")) for p in files]
        return [p["label"] for p in httpx.post(url + "/v1/predict", files=uploads, timeout=60).json()["predictions"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=None, help="the tree make_photo_patches.py wrote")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", default="image_folders_cpu.json", help="the file under benchmarks/results/")
    ap.add_argument("--skip-fashion", action="store_true")
    ap.add_argument("--skip-photos", action="store_true")
    ap.add_argument("--skip-training", action="store_true", help="Fashion: the loader's figures only")
    a = ap.parse_args()
    env = machine()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        out = {"machine": env}
        if not a.skip_photos:
            out["photos"] = photos(a.photos, work)
        if not a.skip_fashion:
            seeds = [] if a.skip_training else [int(s) for s in a.seeds.split(",")]
            out["fashion_png"] = fashion(work, a.epochs, seeds)
    save(a.out, out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
