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
# DEVICE=cpu TRAIN_N=2000 EPOCHS=1 MIN_TIME=0.2 checks the script's plumbing on a machine without a GPU.
set -uo pipefail
OUT=${OUT:-gpu-out}
PHASE=${PHASE:-all}
DEVICE=${DEVICE:-cuda}
TRAIN_N=${TRAIN_N:-60000}
EPOCHS=${EPOCHS:-3}
MIN_TIME=${MIN_TIME:-1.0}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .devdeps ] && ls .devdeps/*.whl >/dev/null 2>&1; then  # made by benchmarks/device_deps.sh
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/cnnkit-devdeps .devdeps/*.whl \
    || echo "warning: could not install .devdeps (made for CPython 3.12)" >&2
  export PYTHONPATH="/tmp/cnnkit-devdeps${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src"
PLOT=()
"$PY" -c "import matplotlib" 2>/dev/null && PLOT=(--plot "$OUT/bench_$DEVICE.png")  # else: benchmarks/plot_bench.py
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

if [ "$DEVICE" = cuda ]; then
  step nvidia-smi nvidia-smi
  step doctor cnnkit doctor --json
  # test_runtime.py needs only torch, numpy and onnxruntime; its CUDA test needs onnxruntime-gpu (PHASE=all)
  [ "$PHASE" = all ] && step pytest-cuda "$PY" -m pytest -q -m cuda tests/test_runtime.py -p no:cacheprovider
fi
# accuracy on real digits (bundled sample), then throughput on a 60,000-image MNIST-sized set
step train-sample cnnkit train --dataset sample --device "$DEVICE" --out "$OUT/run" --json
step synthetic "$PY" benchmarks/make_synthetic_idx.py "$OUT/synthetic" --train "$TRAIN_N"
step train-synthetic cnnkit train --data-dir "$OUT/synthetic" --device "$DEVICE" --epochs "$EPOCHS" --out "$OUT/run60k" --json
step train-synthetic-bf16 cnnkit train --data-dir "$OUT/synthetic" --device "$DEVICE" --epochs "$EPOCHS" --precision bf16 \
  --out "$OUT/run60k-bf16" --json
step export cnnkit export "$OUT/run" --format all --json
BACKENDS=eager,torchscript,compile
[ "$DEVICE" = cuda ] && BACKENDS=$BACKENDS,eager-cudagraph
if [ "$PHASE" = all ]; then
  step verify cnnkit verify "$OUT/run/model.onnx" "$OUT/run/model.ts" --device "$DEVICE" --json
  BACKENDS=$BACKENDS,onnx
  [ "$DEVICE" = cuda ] && BACKENDS=$BACKENDS,onnx-cudagraph
else
  step verify-torch cnnkit verify "$OUT/run/model.ts" --device "$DEVICE" --json
fi
step bench cnnkit bench "$OUT/run" --device "$DEVICE" --backends "$BACKENDS" --batch-sizes 1,8,64,256 \
  --min-time "$MIN_TIME" --json "$OUT/bench_$DEVICE.json" --csv "$OUT/bench_$DEVICE.csv" "${PLOT[@]}"

echo "failed steps: ${failed[*]:-none}" | tee -a "$OUT/steps.log"
[ ${#failed[@]} -eq 0 ]
