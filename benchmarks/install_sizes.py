"""How much disk each install takes: the full environment (`make install`: every extra), the runtime-only one
(`make runtime-check`: base + [serve], no torch) and the Triton one (`make triton-check`), as they stand here.

    python benchmarks/install_sizes.py     (after make install, make runtime-check, make triton-check)

Writes benchmarks/results/install_sizes.json.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

ROOT = Path(__file__).resolve().parents[1]
VENVS = {
    ".venv": "pip install -e '.[dev]' (train, serve, plot, dev tools; CUDA torch)",
    ".venv-runtime": "pip install '.[serve]' (the base install + serve: no torch, no onnx)",
    ".venv-triton": "pip install '.[serve,triton]' in a venv of the system's Python (numpy<2)",
}


def main() -> None:
    sizes = {}
    for venv, what in VENVS.items():
        path = ROOT / venv
        if path.is_dir():
            kib = int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()[0])
            sizes[venv] = {"install": what, "mib": round(kib / 1024)}
            print(venv, sizes[venv]["mib"], "MiB")
    save("install_sizes.json", {"machine": machine(), "command": "python benchmarks/install_sizes.py", "sizes": sizes})


if __name__ == "__main__":
    main()
