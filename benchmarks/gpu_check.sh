#!/usr/bin/env bash
# Prove the CUDA paths on a machine with an NVIDIA GPU. Run from the repository root:
#
#   OUT=/path/to/out PHASE=all bash benchmarks/gpu_check.sh
#
# PHASE=torch   skips what needs onnxruntime-gpu (torch paths only)
# PHASE=all     everything, ONNX Runtime's CUDA provider included
# ORT_PARTS=DIR the parts made by benchmarks/ort_gpu_pack.sh, gathered in DIR: checked, unpacked into
#               /tmp/ort-site and put first on PYTHONPATH (for a machine whose image has the CPU onnxruntime only)
# Each step's stdout (the --json report, where the command has one) goes to $WORK/NAME.log, its stderr to NAME.err.
# Works from an installed cnnkit or from the tree (PYTHONPATH=src). Everything (models, data, logs) is written
# to $WORK (default: a fresh folder in /tmp); $OUT receives only what is worth bringing back: steps.log,
# bench_$DEVICE.{json,csv,png} and gpu_check.tar.gz (every log, JSON and metrics file; no models, no data).
# Each step is logged and the script goes on after a failure; it exits non-zero if any step failed.
# DEVICE=cpu TRAIN_N=2000 EPOCHS=1 MIN_TIME=0.2 checks the script's plumbing on a machine without a GPU.
set -uo pipefail
OUT=${OUT:-gpu-out}
WORK=${WORK:-$(mktemp -d /tmp/cnnkit-gpu-check.XXXXXX)}
PHASE=${PHASE:-all}
DEVICE=${DEVICE:-cuda}
TRAIN_N=${TRAIN_N:-60000}
EPOCHS=${EPOCHS:-3}
MIN_TIME=${MIN_TIME:-1.0}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}  # seconds; a step that hangs must not cost the steps after it
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/steps.log"
if [ -n "${ORT_PARTS:-}" ]; then
  (cd "$ORT_PARTS" && cat part.* > /tmp/ort.tar.xz && echo "$(cat SHA256)  /tmp/ort.tar.xz" | sha256sum -c --quiet - \
    && "$PY" -c "import tarfile; tarfile.open('/tmp/ort.tar.xz').extractall('/tmp/ort-site', filter='tar')" \
    && rm /tmp/ort.tar.xz) \
    || { echo "could not unpack onnxruntime-gpu from $ORT_PARTS" | tee -a "$OUT/steps.log"; exit 2; }
  export PYTHONPATH="/tmp/ort-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src"
export CNNKIT_DATA_DIR="$WORK/cache"
PLOT=()
"$PY" -c "import matplotlib" 2>/dev/null && PLOT=(--plot "$WORK/bench_$DEVICE.png")  # else: benchmarks/plot_bench.py
failed=()

step() {  # step NAME COMMAND...: run (under a timeout), log to $WORK/NAME.log, remember failures
  local name=$1; shift
  echo "== $name: $(printf '%s ' "$@" | tr '\n' ' ' | cut -c1-240)" | tee -a "$OUT/steps.log"
  local t0=$SECONDS
  timeout -k 10 "$STEP_TIMEOUT" "$@" > "$WORK/$name.log" 2> "$WORK/$name.err"
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.log"
  tail -n 12 "$WORK/$name.log" "$WORK/$name.err"
  [ $rc -eq 0 ] || failed+=("$name")
}

CNNKIT=("$PY" -m cnnkit)

# In a process that never imports torch: the runtime must find the CUDA libraries by itself.
RUNTIME_TORCH_FREE=$(cat <<'PY'
import json, sys
import numpy as np
from cnnkit.datasets import load_sample
from cnnkit.runtime import Classifier
model, device = sys.argv[1], sys.argv[2]
clf = Classifier(model, device=device, fallback="raise")
x = load_sample().test_images[:256]
y = clf.logits(x)
ref = Classifier(model, device="cpu").logits(x)
print(json.dumps({"providers": clf.providers, "nodes": clf.node_assignment, "batch": len(x),
                  "max_abs_vs_cpu": float(np.abs(y - ref).max()),
                  "top1_agreement_vs_cpu": float((y.argmax(1) == ref.argmax(1)).mean()),
                  "torch_imported": "torch" in sys.modules}, indent=2))
assert "torch" not in sys.modules, "the runtime imported torch"
PY
)

# a few bundled test digits as PNG files, for `cnnkit predict`
SAMPLE_PNGS=$(cat <<'PY'
import sys
from pathlib import Path
from PIL import Image
from cnnkit.datasets import load_sample
ds, out = load_sample(), Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for i in range(8):
    Image.fromarray(ds.test_images[i]).save(out / f"digit{i}_label{ds.test_labels[i]}.png")
PY
)

if [ "$DEVICE" = cuda ]; then
  step nvidia-smi nvidia-smi
  [ "$PHASE" = all ] && step doctor "${CNNKIT[@]}" doctor --json
  # test_runtime.py's CUDA test needs onnxruntime-gpu (PHASE=all)
  [ "$PHASE" = all ] && step pytest-cuda "$PY" -m pytest -q -m cuda tests/integration/test_runtime.py -p no:cacheprovider
fi
# accuracy on real digits (bundled sample), then throughput on a 60,000-image MNIST-sized set
step train-sample "${CNNKIT[@]}" train --dataset sample --device "$DEVICE" --out "$WORK/run" --json
step synthetic "$PY" benchmarks/make_synthetic_idx.py "$WORK/synthetic" --train "$TRAIN_N"
step train-synthetic "${CNNKIT[@]}" train --data-dir "$WORK/synthetic" --device "$DEVICE" --epochs "$EPOCHS" --recipe default \
  --out "$WORK/run60k" --json
step train-synthetic-bf16 "${CNNKIT[@]}" train --data-dir "$WORK/synthetic" --device "$DEVICE" --epochs "$EPOCHS" --recipe default \
  --precision bf16 --out "$WORK/run60k-bf16" --json
step export "${CNNKIT[@]}" export "$WORK/run" --format all --json
BACKENDS=eager,torchscript,compile
[ "$DEVICE" = cuda ] && BACKENDS=$BACKENDS,eager-cudagraph
if [ "$PHASE" = all ]; then
  step verify "${CNNKIT[@]}" verify "$WORK/run/model.onnx" "$WORK/run/model.ts" --device "$DEVICE" --json
  step runtime-torch-free "$PY" -c "$RUNTIME_TORCH_FREE" "$WORK/run/model.onnx" "$DEVICE"
  "$PY" -c "$SAMPLE_PNGS" "$WORK/digits"
  step predict "${CNNKIT[@]}" predict "$WORK/run/model.onnx" "$WORK"/digits/*.png --device "$DEVICE" --top-k 2 --json
  BACKENDS=$BACKENDS,onnx
  [ "$DEVICE" = cuda ] && BACKENDS=$BACKENDS,onnx-cudagraph
else
  step verify-torch "${CNNKIT[@]}" verify "$WORK/run/model.ts" --device "$DEVICE" --json
fi
step bench "${CNNKIT[@]}" bench "$WORK/run" --device "$DEVICE" --backends "$BACKENDS" --batch-sizes 1,8,64,256 \
  --min-time "$MIN_TIME" --json "$WORK/bench_$DEVICE.json" --csv "$WORK/bench_$DEVICE.csv" "${PLOT[@]}"

echo "failed steps: ${failed[*]:-none}" | tee -a "$OUT/steps.log"
for f in "$WORK/bench_$DEVICE".{json,csv,png}; do [ -f "$f" ] && cp "$f" "$OUT/"; done
# logs, JSON reports, checkpoint metadata and per-epoch metrics; no weights, models or data
(cd "$WORK" && find . \( -name '*.log' -o -name '*.err' -o -name '*.json' -o -name '*.jsonl' -o -name '*.csv' \) \
  -not -path './cache/*' -not -path './synthetic/*' -print0 | tar --null -czf "$OUT/gpu_check.tar.gz" -T -)
cp "$OUT/steps.log" "$WORK/steps.log"
[ ${#failed[@]} -eq 0 ]
