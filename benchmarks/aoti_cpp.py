"""The AOTInductor package in C++: build benchmarks/aoti_cpp/main.cpp against the torch wheel's headers and
libraries (g++, no CMake), run it on a model.aoti.pt2 that cnnkit exported, and compare its logits with cnnkit's
eager model on the same pixels. Writes results/aoti_cpp_cpu.json.

    python benchmarks/aoti_cpp.py RUN     # RUN: a run folder holding model.aoti.pt2 (cnnkit export RUN --format aoti)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

SOURCE = Path(__file__).parent / "aoti_cpp" / "main.cpp"


def build(out: Path) -> tuple[Path, float]:
    import torch.utils.cpp_extension as ext

    t0 = time.perf_counter()
    includes = [f"-I{p}" for p in ext.include_paths()]
    libs = [f"-L{p}" for p in ext.library_paths()] + [f"-Wl,-rpath,{p}" for p in ext.library_paths()]
    exe = out / "aoti_consumer"
    abi = "-D_GLIBCXX_USE_CXX11_ABI=1"
    cmd = ["g++", "-std=c++20", "-O2", abi, str(SOURCE), "-o", str(exe), *includes, *libs,
           "-ltorch", "-ltorch_cpu", "-lc10"]  # fmt: skip
    subprocess.run(cmd, check=True)
    return exe, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--batch", type=int, default=4)
    a = ap.parse_args()
    import torch

    from cnnkit.export import torch_formats
    from cnnkit.train import checkpoint
    from cnnkit.train.checkpoint import deployable

    package = a.run / "model.aoti.pt2"
    info, record = torch_formats.metadata(package)
    c, h, w = info.geometry.shape
    with tempfile.TemporaryDirectory() as tmp:
        exe, build_s = build(Path(tmp))
        t0 = time.perf_counter()
        r = subprocess.run([str(exe), str(package), str(a.batch), str(c), str(h), str(w)], capture_output=True,
                           text=True, check=True)  # fmt: skip
        run_s = time.perf_counter() - t0
    lines = r.stdout.strip().splitlines()
    cpp = np.array([[float(v) for v in ln.split()] for ln in lines[1:]], np.float32)
    x = ((np.arange(a.batch * c * h * w, dtype=np.int64) * 7 + 3) % 256).astype(np.uint8).reshape(a.batch, c, h, w)
    with torch.inference_mode():
        ref = deployable(checkpoint.load(a.run)).eval()(torch.from_numpy(x)).numpy()
    result = {
        "machine": machine(),
        "package": str(package),
        "aoti_record": {k: v for k, v in record.items() if k != "cnnkit"},
        "cpp_said": lines[0],
        "build_s": build_s,
        "cpp_run_s_including_load": run_s,
        "max_abs_vs_eager": float(np.abs(cpp - ref).max()),
        "same_top1": bool((cpp.argmax(1) == ref.argmax(1)).all()),
        "batch": a.batch,
    }
    save("aoti_cpp_cpu.json", result)
    print(result)


if __name__ == "__main__":
    main()
