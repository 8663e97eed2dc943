"""A cnnkit command's `--json` report kept as a result file, with the machine record every result file carries (CPU
model and flags, commit, tree state, command) beside it.

    python benchmarks/cli_record.py OUT.json train --dataset sample --out RUN --json
    python benchmarks/cli_record.py OUT.json export RUN --format all --json

Writes benchmarks/results/OUT.json as {"machine": ..., "seconds": wall time, "result": the command's JSON}; a command
that fails fails this script, and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, args = sys.argv[1], sys.argv[2:]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnkit", *args], check=True, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    save(out, {"machine": machine(), "seconds": round(seconds, 2), "result": json.loads(done.stdout)})


if __name__ == "__main__":
    main()
