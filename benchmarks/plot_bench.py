"""Plot a saved `cnnkit bench` JSON again: `python benchmarks/plot_bench.py RESULT.json OUT.png`
(e.g. for results from a machine that had no matplotlib)."""

from __future__ import annotations

import json
import sys

from cnnkit.bench.report import plot

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as fh:
        plot(json.load(fh), sys.argv[2])
    print(f"wrote {sys.argv[2]}")
