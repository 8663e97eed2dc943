#!/usr/bin/env bash
# Prove the CUDA paths on a machine with an NVIDIA GPU. Run from the repository root:
#
#   OUT=/path/to/out PHASE=all bash benchmarks/gpu_check.sh
#
# PHASE=torch   skips what needs onnxruntime-gpu (first device call: torch paths only)
# PHASE=all     everything, ONNX Runtime's CUDA provider included (after onnxruntime-gpu is installed;
#               see ../shared/device/ort-gpu-parts.sh)
# Works from an installed cnnkit or from the tree (PYTHONPATH=src). Writes logs, JSON and plots into $OUT.
# Each step is logged and the script goes on after a failure; it exits non-zero if any step failed.
set -uo pipefail
OUT=${OUT:-gpu-out}
PHASE=${PHASE:-all}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src"
export CNNKIT_DATA_DIR="$OUT/cache"
failed=()

step() {  # step NAME COMMAND...: run, tee the log, remember failures
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/steps.log"
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.log"
  tail -n 25 "$OUT/$name.log"
  [ $rc -eq 0 ] || failed+=("$name")
}

cnnkit() { "$PY" -m cnnkit "$@"; }

step nvidia-smi nvidia-smi
step doctor cnnkit doctor --json
step pytest-cuda "$PY" -m pytest -q -m cuda tests -p no:cacheprovider
# accuracy on real digits (bundled sample), then throughput on a 60,000-image MNIST-sized set
step train-sample cnnkit train --dataset sample --device cuda --out "$OUT/run" --json
step synthetic "$PY" benchmarks/make_synthetic_idx.py "$OUT/synthetic" --train 60000
step train-60k cnnkit train --data-dir "$OUT/synthetic" --device cuda --epochs 3 --out "$OUT/run60k" --json
step train-60k-bf16 cnnkit train --data-dir "$OUT/synthetic" --device cuda --epochs 3 --precision bf16 \
  --out "$OUT/run60k-bf16" --json
step export cnnkit export "$OUT/run" --format all --json
BACKENDS=eager,torchscript,compile,eager-cudagraph
if [ "$PHASE" = all ]; then
  step verify-cuda cnnkit verify "$OUT/run/model.onnx" "$OUT/run/model.ts" --device cuda --json
  BACKENDS=$BACKENDS,onnx,onnx-cudagraph
else
  step verify-cuda-torch cnnkit verify "$OUT/run/model.ts" --device cuda --json
fi
step bench-cuda cnnkit bench "$OUT/run" --device cuda --backends "$BACKENDS" --batch-sizes 1,8,64,256 \
  --min-time 1.0 --json "$OUT/bench_cuda.json" --csv "$OUT/bench_cuda.csv" --plot "$OUT/bench_cuda.png"

echo "failed steps: ${failed[*]:-none}" | tee -a "$OUT/steps.log"
[ ${#failed[@]} -eq 0 ]
