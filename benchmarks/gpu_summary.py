"""Helpers of benchmarks/gpu_check.sh, and its summary.

    python benchmarks/gpu_summary.py --environment                  the machine, GPU and packages (JSON)
    python benchmarks/gpu_summary.py --nodes DEVICE MODEL.onnx...   the execution provider of every node (JSON)
    python benchmarks/gpu_summary.py --torch-free MODEL DEVICE      the runtime in a process without torch (JSON)
    python benchmarks/gpu_summary.py --pngs DIR                     a few bundled test digits as PNG files
    python benchmarks/gpu_summary.py --summary WORK --device D --out summary.json

The summary reads the check's step logs (each command's --json report) and result files in WORK and writes one
file: gpu, commit, torch, onnxruntime, train (seconds per epoch, per 60,000 images, accuracy, the recipe), parity,
nodes, bench, serve, optimize, precision_auto, torchrun, tests, and not_run (every step that did not run or failed,
with why). Figures are copied from the reports, never computed anew here.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EPOCH_60K = 60_000


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    gpu = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    ldd = _run(["ldd", "--version"])
    env: dict[str, Any] = {
        "gpu": dict(zip(("name", "driver", "memory"), [x.strip() for x in gpu.split(",")], strict=False))
        if gpu
        else None,
        "commit": _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        "uncommitted_changes": bool(_run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])),
        "python": platform.python_version(),
        "glibc": ldd.splitlines()[0] if ldd else None,
        "cpu_cores": __import__("os").cpu_count(),
        "packages": {
            n: version(n)
            for n in (
                "torch",
                "onnx",
                "onnxruntime",
                "onnxruntime-gpu",
                "numpy",
                "starlette",
                "uvicorn",
                "perf-analyzer",
            )
        },  # fmt: skip
    }
    try:
        import torch

        env["torch"] = {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cuda_available": torch.cuda.is_available(),
        }
        if torch.cuda.is_available():
            env["torch"]["device"] = torch.cuda.get_device_name(0)
            env["torch"]["capability"] = list(torch.cuda.get_device_capability(0))
    except ImportError:
        env["torch"] = None
    try:
        import onnxruntime as ort

        env["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError:
        env["onnxruntime"] = None
    return env


def nodes(device: str, models: list[str]) -> dict[str, Any]:
    from cnnkit.runtime import Classifier

    out: dict[str, Any] = {}
    for m in models:
        try:
            clf = Classifier(m, device=device, fallback="raise" if device == "cuda" else "warn")
        except Exception as exc:  # one model that does not load must not hide the others' placement
            out[Path(m).name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        assignment = clf.node_assignment or {}
        on_cuda = bool(assignment) and set(assignment) == {"CUDAExecutionProvider"}
        out[Path(m).name] = {"providers": clf.providers, "nodes": assignment, "all_on_cuda": on_cuda}
    return out


def torch_free(model: str, device: str) -> dict[str, Any]:
    """The runtime alone must find the CUDA libraries: this process never imports torch."""
    import numpy as np

    from cnnkit.data.datasets import load_sample
    from cnnkit.runtime import Classifier

    clf = Classifier(model, device=device, fallback="raise")
    x = load_sample().test_images[:256]
    y = clf.logits(x)
    ref = Classifier(model, device="cpu").logits(x)
    result = {"providers": clf.providers, "nodes": clf.node_assignment, "batch": len(x),
              "max_abs_vs_cpu": float(np.abs(y - ref).max()),
              "top1_agreement_vs_cpu": float((y.argmax(1) == ref.argmax(1)).mean()),
              "torch_imported": "torch" in sys.modules}  # fmt: skip
    if result["torch_imported"]:
        raise SystemExit(json.dumps(result) + "\nthe runtime imported torch")
    return result


def pngs(out: Path) -> None:
    from PIL import Image

    from cnnkit.data.datasets import load_sample

    ds = load_sample()
    out.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray(ds.test_images[i, 0]).save(out / f"digit{i}_label{ds.test_labels[i]}.png")


# ------------------------------------------------------------------------------------------------ the summary


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _train(report: Any, run_dir: Path) -> dict[str, Any] | None:
    if not isinstance(report, dict):
        return None
    epochs = [
        {"epoch": e["epoch"], "seconds": e["seconds"], "images": round(e["images_per_s"] * e["seconds"]),
         "epoch_s_60k": e["seconds"] * EPOCH_60K / (e["images_per_s"] * e["seconds"]),
         "val_accuracy": e["val_accuracy"], "test_accuracy": e["test_accuracy"]}
        for e in report.get("epochs", [])
    ]  # fmt: skip
    per60k = sorted(e["epoch_s_60k"] for e in epochs)
    ck = _json(run_dir / "checkpoint.json") or {}
    return {
        "device": report.get("device"),
        "precision": report.get("precision"),
        "precision_reason": report.get("precision_reason"),
        "cuda_graph": report.get("cuda_graph"),
        "steps_reason": report.get("steps_reason"),
        "epochs": epochs,
        "epoch_s_60k": [e["epoch_s_60k"] for e in epochs],
        "epoch_s_60k_median": per60k[len(per60k) // 2] if per60k else None,
        "epoch_s_60k_max": per60k[-1] if per60k else None,
        "images_per_s": report.get("images_per_s"),
        "test_accuracy": (ck.get("metrics") or {}).get("test_accuracy"),
        "best_epoch": report.get("best_epoch"),
        "recipe": ck.get("train_args"),
        "dataset": report.get("dataset"),
        "world_size": report.get("world_size"),
        "process_group": report.get("process_group"),
    }


def _bench_rows(report: Any) -> list[dict[str, Any]]:
    """batch-1 p50 and batch-256 images/s per backend and file, from a `bench --json` report."""
    rows = []
    for r in report.get("rows", []) if isinstance(report, dict) else []:
        if r.get("batch_size") not in (1, 256):
            continue
        latency = r.get("latency") or {}
        rows.append({"backend": r.get("backend"), "batch_size": r["batch_size"], "ran_on": r.get("ran_on"),
                     "p50_ms": latency.get("p50_ms"), "p99_ms": latency.get("p99_ms"),
                     "images_per_s": r.get("images_per_s"), "fell_back": r.get("fell_back"),
                     "error": r.get("error")})  # fmt: skip
    return rows


def _parity(work: Path) -> dict[str, Any]:
    """Per artefact: where it ran, the largest |difference| from the eager reference over the cases (fp32, TF32
    off), or the accuracy gate's figures (fp16, INT8), and whether it passed."""
    out: dict[str, Any] = {}
    for name in ("verify", "verify-fp16", "verify-int8", "verify-torch"):
        report = _json(work / f"{name}.log")
        if not isinstance(report, dict):
            continue
        for b in report.get("backends", []):
            cases = b.get("cases") or []
            out[Path(b.get("artefact") or b.get("backend")).name] = {
                "backend": b.get("backend"), "variant": b.get("variant"), "ran_on": b.get("ran_on"),
                "device": report.get("device"),
                "max_abs": max((c.get("max_abs", 0.0) for c in cases), default=None),
                "atol": report.get("atol"), "gate": b.get("gate"), "error": b.get("error"), "passed": b.get("passed"),
            }  # fmt: skip
    return out


def _steps(work: Path) -> dict[str, dict[str, int]]:
    """Each step that ran: its exit status and seconds (steps.tsv, written by gpu_check.sh's `step`)."""
    steps = {}
    if (work / "steps.tsv").is_file():
        for line in (work / "steps.tsv").read_text().splitlines():
            step, rc, seconds = line.split(" ")
            steps[step] = {"exit": int(rc), "seconds": int(seconds)}
    return steps


def _not_run(work: Path, steps: dict[str, dict[str, int]]) -> list[dict[str, str]]:
    rows = []
    if (work / "not_run.tsv").is_file():
        for line in (work / "not_run.tsv").read_text().splitlines():
            step, _, why = line.partition("\t")
            rows.append({"step": step, "why": why})
    for step, ran in steps.items():
        rc = ran["exit"]
        if rc != 0:
            err_file = work / f"{step}.err"
            err = err_file.read_text(errors="replace").strip().splitlines() if err_file.is_file() else []
            why = f"failed (exit {rc}{', timed out' if rc in (124, 137) else ''}): {(err or [''])[-1][:300]}"
            rows.append({"step": step, "why": why})
    return rows


def _tests(work: Path) -> dict[str, Any] | None:
    xml = work / "pytest-cuda.xml"
    if not xml.is_file():
        return None
    import xml.etree.ElementTree as ET

    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    if suite is None:
        return None
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def summary(work: Path, device: str) -> dict[str, Any]:
    env = _json(work / "env.log") or {}
    steps = _steps(work)
    train = _train(_json(work / "train-60k.log"), work / "run60k")
    profile = _json(work / "profile" / "train_profile.json")
    optimize = _json(work / "optimize.json")
    serve = _json(work / "serve.json")
    rates = _json(work / "cache" / "precision.json")
    predict = _json(work / "predict.log")
    return {
        "device": device,
        "gpu": env.get("gpu"),
        "commit": env.get("commit"),
        "uncommitted_changes": env.get("uncommitted_changes"),
        "command": "OUT=... ORT_PARTS=... WHEELS=... bash benchmarks/gpu_check.sh",
        "torch": env.get("torch"),
        "onnxruntime": env.get("onnxruntime"),
        "environment": env,
        "train": train,
        "train_target": {
            "epoch_under_1s": bool(train and train["epoch_s_60k_max"] is not None and train["epoch_s_60k_max"] < 1.0),
            "median_epoch_s_60k": train["epoch_s_60k_median"] if train else None,
            "note": "seconds of one epoch's training steps and its augmentation, scaled to 60,000 images (the "
            "default recipe trains on 54,000 of them: 10% is the validation split); evaluation not counted",
        },
        "train_eager": _train(_json(work / "train-60k-eager.log"), work / "run60k-eager"),
        "train_sample": _train(_json(work / "train-sample.log"), work / "run"),
        "train_profile": {k: profile[k] for k in ("device", "epoch_images", "epoch_data_s", "modes")}
        if isinstance(profile, dict)
        else None,  # fmt: skip
        "precision_auto": {
            "rates_images_per_s": rates,
            "choice": (train or {}).get("precision"),
            "reason": (train or {}).get("precision_reason"),
        },  # fmt: skip
        "torchrun": _train(_json(work / "torchrun-1.log"), work / "run-torchrun"),
        "parity": _parity(work),
        "nodes": _json(work / "nodes.log"),
        "evaluate": _json(work / "evaluate.log"),
        "optimize": {
            "candidates": [{k: c.get(k) for k in ("name", "passed", "check")} for c in optimize.get("candidates", [])],
            "engine_checks": optimize.get("engine_checks"),
            "winners_by_batch": optimize.get("winners"),
            "selected": optimize.get("selected"),
            "target_batch": optimize.get("target_batch"),
            "why": "the fastest variant x engine that passed its checks, at the target batch (rows: optimize.json)",
        }
        if isinstance(optimize, dict)
        else None,  # fmt: skip
        "bench": {
            "tf32_off": _bench_rows(_json(work / f"bench_{device}.json")),
            "tf32_on": _bench_rows(_json(work / "bench_tf32.json")),
            "variants": _bench_rows(_json(work / "bench_variants.json")),
        },  # fmt: skip
        "serve": serve if isinstance(serve, dict) else None,
        "predict": predict,
        "runtime_torch_free": _json(work / "runtime-torch-free.log"),
        "tests": _tests(work),
        "steps": steps,
        "not_run": _not_run(work, steps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--environment", action="store_true")
    mode.add_argument("--nodes", nargs="+", metavar=("DEVICE", "MODEL"))
    mode.add_argument("--torch-free", nargs=2, metavar=("MODEL", "DEVICE"))
    mode.add_argument("--pngs", type=Path)
    mode.add_argument("--summary", type=Path, metavar="WORK")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.pngs:
        pngs(a.pngs)
        return
    if a.environment:
        result: Any = environment()
    elif a.nodes:
        result = nodes(a.nodes[0], a.nodes[1:])
    elif a.torch_free:
        result = torch_free(*a.torch_free)
    else:
        result = summary(a.summary, a.device)
    text = json.dumps(result, indent=2, default=str) + "\n"
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
