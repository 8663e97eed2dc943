#!/usr/bin/env bash
# Serving peers, side by side (benchmarks/peers_serving.py): cnnkit serve, cnnkit serve --engine triton, and a
# KServe ModelServer on the same file. Each peer installs in its own venv: benchmarks/.venv-kserve (kserve,
# onnxruntime) and .venv-triton (cnnkit[serve,triton] on the system's Python 3.11: `make triton-check` makes it).
#   bash benchmarks/peers_serving.sh [RUN [ARGS]]   (RUN: an optimized run folder, default runs/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/peers}
shift || true
[ -x .venv/bin/cnnkit ] || make install
[ -x .venv-triton/bin/python ] || bash scripts/check_triton.sh
if [ ! -x benchmarks/.venv-kserve/bin/python ]; then
  python3 -m venv benchmarks/.venv-kserve
  benchmarks/.venv-kserve/bin/pip install --quiet kserve onnxruntime numpy
fi
if [ ! -f "$RUN/runtime.json" ]; then
  .venv/bin/cnnkit train --dataset sample --recipe default --out "$RUN" --force --json > /dev/null
  .venv/bin/cnnkit optimize "$RUN" --select --batch-sizes 1,8,64,256 --json "$RUN/optimize.json" > /dev/null
fi
.venv/bin/python benchmarks/peers_serving.py "$RUN" "$@"
