#!/usr/bin/env bash
# The GPU proof of today's code: every CUDA path, run in one call on a machine with an NVIDIA GPU, summed up in
# benchmarks/results/cuda/summary.json (by benchmarks/gpu_summary.py). Run from the repository root:
#
#   OUT=/path/to/out bash benchmarks/gpu_check.sh
#
# ORT_PARTS=DIR the parts made by benchmarks/ort_gpu_pack.sh, gathered in DIR: checked, unpacked into
#               /tmp/ort-site and put first on PYTHONPATH (for a machine whose image has the CPU onnxruntime only)
# WHEELS=DIR    wheels to install into /tmp/site first (benchmarks/gpu_wheels.sh: the serve extra, perf_analyzer)
# PHASE=torch   skips what needs onnxruntime-gpu (torch paths only); PHASE=all (default) runs everything
# BUDGET=480   seconds for every step together (each step's timeout is capped by what is left; the summary is
#               always written): run it under `timeout` of BUDGET + 60 or more
# DEVICE=cpu TRAIN_N=3000 QUICK=1 checks the script's plumbing on a machine without a GPU.
#
# Steps, in this order (the training target first, the long test run last): environment, doctor, a profile of the
# training step (eager vs CUDA graph), the default recipe on TRAIN_N MNIST-shaped images (precision auto, steps as
# `auto` runs them) and the same with eager steps, the bundled digits (the model the later steps use), torchrun with
# one process (NCCL), exports (folded fp32 ONNX, TorchScript, fp16, INT8), verify on the device, evaluate, optimize
# --select, bench (every backend, CUDA graphs, TF32 on and off), the torch-free runtime, predict, serve under load,
# the CUDA-marked tests. Each step's stdout goes to $WORK/NAME.log, stderr to NAME.err; a step that fails is logged
# and the script goes on; it exits non-zero if any failed. $OUT receives summary.json, steps.log, train_profile.md,
# bench_$DEVICE.json and gpu_check.tar.gz (every log, JSON and metrics file; no models, no data).
set -uo pipefail
OUT=${OUT:-gpu-out}
WORK=${WORK:-$(mktemp -d /tmp/cnnkit-gpu-check.XXXXXX)}
PHASE=${PHASE:-all}
DEVICE=${DEVICE:-cuda}
TRAIN_N=${TRAIN_N:-60000}
QUICK=${QUICK:-}           # plumbing: fewer epochs, steps and seconds
STEP_TIMEOUT=${STEP_TIMEOUT:-240}  # seconds; a step that hangs must not cost the steps after it
BUDGET=${BUDGET:-480}  # seconds for all steps: what is left when a step starts caps its timeout (30 s kept for the
                       # summary and the archive); a step with under 20 s left is skipped (not_run), not started
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
: > "$OUT/steps.log"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "could not install the wheels in $WHEELS" | tee -a "$OUT/steps.log"; exit 2; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  pa=/tmp/site/perf_analyzer/bin/perf_analyzer
  [ -f "$pa" ] && chmod +x "$pa" && export PERF_ANALYZER=${PERF_ANALYZER:-$pa}
fi
if [ -n "${ORT_PARTS:-}" ]; then
  (cd "$ORT_PARTS" && cat part.* > /tmp/ort.tar.xz && echo "$(cat SHA256)  /tmp/ort.tar.xz" | sha256sum -c --quiet - \
    && "$PY" -c "import tarfile; tarfile.open('/tmp/ort.tar.xz').extractall('/tmp/ort-site', filter='tar')" \
    && rm /tmp/ort.tar.xz) \
    || { echo "could not unpack onnxruntime-gpu from $ORT_PARTS" | tee -a "$OUT/steps.log"; exit 2; }
  export PYTHONPATH="/tmp/ort-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src"
export CNNKIT_DATA_DIR="$WORK/cache" PYTHONUNBUFFERED=1
failed=()
MIN_TIME=1.0; PROFILE_STEPS=300; SERVE_S=3; EPOCHS=(); EAGER_EPOCHS=2; SAMPLE_EPOCHS=()
if [ -n "$QUICK" ]; then
  MIN_TIME=0.1; PROFILE_STEPS=20; SERVE_S=1; EPOCHS=(--epochs 1); EAGER_EPOCHS=1; SAMPLE_EPOCHS=(--epochs 1)
fi

step() {  # step NAME COMMAND...: run (under a timeout), log to $WORK/NAME.log, remember failures
  local name=$1; shift
  local left=$((BUDGET - 30 - SECONDS))
  if [ "$left" -lt 20 ]; then skip "$name" "no time left in the ${BUDGET} s budget"; return; fi
  echo "== $name: $(printf '%s ' "$@" | tr '\n' ' ' | cut -c1-240)" | tee -a "$OUT/steps.log"
  local t0=$SECONDS
  timeout -k 5 "$((left < STEP_TIMEOUT ? left : STEP_TIMEOUT))" "$@" > "$WORK/$name.log" 2> "$WORK/$name.err"
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.log"
  echo "$name $rc $((SECONDS - t0))" >> "$WORK/steps.tsv"
  tail -n 6 "$WORK/$name.log" "$WORK/$name.err"
  [ $rc -eq 0 ] || failed+=("$name")
}
skip() {  # skip NAME REASON: a step that did not run, and why (summary.json's not_run)
  echo "== $1: not run: $2" | tee -a "$OUT/steps.log"
  printf '%s\t%s\n' "$1" "$2" >> "$WORK/not_run.tsv"
}

CNNKIT=("$PY" -m cnnkit)
RUN=$WORK/run
ORT_GPU=$([ "$PHASE" = all ] && echo 1)

step env "$PY" benchmarks/gpu_summary.py --environment
if [ "$DEVICE" = cuda ]; then
  step nvidia-smi nvidia-smi
else
  skip nvidia-smi "DEVICE=cpu (plumbing run)"
fi
step doctor "${CNNKIT[@]}" doctor --json

# training: where a step's time goes, then the default recipe on 60,000 MNIST-shaped images
step train-profile "$PY" benchmarks/train_profile.py --device "$DEVICE" --steps "$PROFILE_STEPS" --out "$WORK/profile"
step synthetic "$PY" benchmarks/make_synthetic_idx.py "$WORK/synthetic" --train "$TRAIN_N"
step train-60k "${CNNKIT[@]}" train --data-dir "$WORK/synthetic" --recipe default "${EPOCHS[@]}" --device "$DEVICE" \
  --out "$WORK/run60k" --json
step train-60k-eager "${CNNKIT[@]}" train --data-dir "$WORK/synthetic" --recipe default --epochs "$EAGER_EPOCHS" \
  --cuda-graph off --precision fp32 --device "$DEVICE" --out "$WORK/run60k-eager" --json
# real digits (the bundled sample): the model every later step exports, verifies, benchmarks and serves
step train-sample "${CNNKIT[@]}" train --dataset sample --recipe default "${SAMPLE_EPOCHS[@]}" --device "$DEVICE" \
  --out "$RUN" --json
step torchrun-1 "${CNNKIT[@]}" train --nproc 1 --dataset sample --recipe default --epochs 2 --device "$DEVICE" \
  --out "$WORK/run-torchrun" --json
step torchrun-1-export "${CNNKIT[@]}" export "$WORK/run-torchrun" --format onnx --json

# exports and their checks
step export "${CNNKIT[@]}" export "$RUN" --format all --json
step export-fp16 "${CNNKIT[@]}" export "$RUN" --precision fp16 --json
step export-int8 "${CNNKIT[@]}" export "$RUN" --precision int8 --json
if [ -n "$ORT_GPU" ]; then
  step verify "${CNNKIT[@]}" verify "$RUN/model.onnx" "$RUN/model.ts" --device "$DEVICE" --json
  step verify-fp16 "${CNNKIT[@]}" verify "$RUN/model.fp16.onnx" --device "$DEVICE" --json
  step verify-int8 "${CNNKIT[@]}" verify "$RUN/model.int8.onnx" --device "$DEVICE" --json
  step nodes "$PY" benchmarks/gpu_summary.py --nodes "$DEVICE" "$RUN/model.onnx" "$RUN/model.fp16.onnx" \
    "$RUN/model.int8.onnx"
  step evaluate "${CNNKIT[@]}" evaluate "$RUN/model.onnx" --dataset sample --device "$DEVICE" --json
  cp -r "$RUN" "$WORK/run-opt"  # --select replaces model.onnx: the fp32 one stays in $RUN for bench
  step optimize "${CNNKIT[@]}" optimize "$WORK/run-opt" --device "$DEVICE" --select --min-time "$MIN_TIME" \
    --json "$WORK/optimize.json"
else
  step verify-torch "${CNNKIT[@]}" verify "$RUN/model.ts" --device "$DEVICE" --json
  for s in verify verify-fp16 verify-int8 nodes evaluate optimize; do skip "$s" "PHASE=torch: no onnxruntime-gpu"; done
fi

# speed: every backend (CUDA graphs included) with TF32 off, then the CUDA ones with TF32 on
BACKENDS=eager,torchscript,compile
[ -n "$ORT_GPU" ] && BACKENDS=$BACKENDS,onnx
if [ "$DEVICE" = cuda ]; then
  BACKENDS=$BACKENDS,eager-cudagraph
  [ -n "$ORT_GPU" ] && BACKENDS=$BACKENDS,onnx-cudagraph
fi
step bench "${CNNKIT[@]}" bench "$RUN" --device "$DEVICE" --backends "$BACKENDS" \
  --batch-sizes 1,8,64,256 --min-time "$MIN_TIME" --json "$WORK/bench_$DEVICE.json" --csv "$WORK/bench_$DEVICE.csv"
if [ "$DEVICE" = cuda ]; then
  step bench-tf32 "${CNNKIT[@]}" bench "$RUN" --device cuda --tf32 \
    --backends "eager,eager-cudagraph${ORT_GPU:+,onnx,onnx-cudagraph}" --batch-sizes 1,256 --min-time "$MIN_TIME" \
    --json "$WORK/bench_tf32.json"
else
  skip bench-tf32 "DEVICE=cpu: TF32 is a CUDA setting"
fi
if [ -n "$ORT_GPU" ]; then
  step bench-variants "${CNNKIT[@]}" bench "$RUN/model.fp16.onnx" "$RUN/model.int8.onnx" --device "$DEVICE" \
    --backends "onnx$([ "$DEVICE" = cuda ] && echo ,onnx-cudagraph)" --batch-sizes 1,256 --min-time "$MIN_TIME" \
    --json "$WORK/bench_variants.json"
  step runtime-torch-free "$PY" benchmarks/gpu_summary.py --torch-free "$RUN/model.onnx" "$DEVICE"
  "$PY" benchmarks/gpu_summary.py --pngs "$WORK/digits"
  step predict "${CNNKIT[@]}" predict "$RUN/model.onnx" "$WORK"/digits/*.png --device "$DEVICE" --top-k 2 --json
  step serve "$PY" benchmarks/serve_device.py "$WORK/run-opt/model.onnx" --device "$DEVICE" --clients 1,16,64 \
    --seconds "$SERVE_S" --out "$WORK/serve.json"
  # only the modules that hold cuda-marked tests: others import packages the GPU image lacks (tritonclient)
  mapfile -t CUDA_TESTS < <(grep -rl "mark.cuda" tests --include='test_*.py' | sort)
  step pytest-cuda "$PY" -m pytest -q -m cuda "${CUDA_TESTS[@]}" -p no:cacheprovider --junitxml "$WORK/pytest-cuda.xml"
else
  for s in bench-variants runtime-torch-free predict serve pytest-cuda; do skip "$s" "PHASE=torch: no onnxruntime-gpu"; done
fi

echo "failed steps: ${failed[*]:-none}" | tee -a "$OUT/steps.log"
cp "$OUT/steps.log" "$WORK/steps.log"
"$PY" benchmarks/gpu_summary.py --summary "$WORK" --device "$DEVICE" --out "$WORK/summary.json" \
  || echo "gpu_summary.py failed" | tee -a "$OUT/steps.log"
for f in summary.json profile/train_profile.md "bench_$DEVICE.json"; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/"; done
# logs, JSON reports, checkpoint metadata and per-epoch metrics; no weights, models or data
(cd "$WORK" && find . \( -name '*.log' -o -name '*.err' -o -name '*.json' -o -name '*.jsonl' -o -name '*.csv' \
  -o -name '*.md' -o -name '*.tsv' -o -name '*.xml' \) -not -path './cache/*' -not -path './synthetic/*' -print0 \
  | tar --null -czf "$OUT/gpu_check.tar.gz" -T -)
[ ${#failed[@]} -eq 0 ]
