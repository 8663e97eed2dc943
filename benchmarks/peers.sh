#!/usr/bin/env bash
# Peers, side by side on this machine: inference (benchmarks/peers_inference.py) against plain ONNX Runtime,
# OpenVINO as it comes and OpenVINO + NNCF INT8. The peers install in their own venv (benchmarks/.venv-peers: numpy,
# onnxruntime, openvino, nncf), never in cnnkit's; cnnkit's runtime runs there from src/ (it needs no torch).
#   bash benchmarks/peers.sh [RUN [ARGS]]   (RUN: a run folder to reuse, default: trained and optimized afresh;
#                                            ARGS go to peers_inference.py, e.g. --rounds 40)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=benchmarks/.venv-peers
RUN=${1:-runs/peers}
shift || true
[ -x .venv/bin/cnnkit ] || make install
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet numpy onnxruntime openvino nncf
fi
if [ ! -f "$RUN/runtime.json" ]; then
  .venv/bin/cnnkit train --dataset sample --recipe default --out "$RUN" --force --json > /dev/null
  .venv/bin/cnnkit optimize "$RUN" --select --batch-sizes 1,8,64,256 --json "$RUN/optimize.json" > /dev/null
fi
PYTHONPATH=src "$VENV/bin/python" benchmarks/peers_inference.py "$RUN" "$@"
