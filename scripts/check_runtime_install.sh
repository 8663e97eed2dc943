#!/usr/bin/env bash
# Prove the runtime-only install for real (run by CI after `make test`): a second virtual environment with
# cnnkit's base install and the serve extra only -- no torch, no onnx -- runs `cnnkit predict`, a served request,
# the embedded runtime, `cnnkit doctor` and `cnnkit bench --backends onnx` on a model exported in the full
# environment (.venv, made by `make install`), and `cnnkit train` there ends with the one-line missing-extra error.
#   bash scripts/check_runtime_install.sh          (RUNTIME_VENV=.venv-runtime by default; kept for reuse)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pip_quiet.sh
PY=${PYTHON:-python3}
FULL=.venv/bin/python
RT=${RUNTIME_VENV:-.venv-runtime}
WORK=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== runtime-only venv ($RT): pip install '.[serve]'"
[ -x "$RT/bin/python" ] || "$PY" -m venv "$RT"
pip_quiet "$RT" --upgrade pip
pip_quiet "$RT" --force-reinstall --no-deps .
pip_quiet "$RT" '.[serve]'
for pkg in torch torchvision onnx; do
  if "$RT/bin/python" -c "import $pkg" 2>/dev/null; then echo "FAIL: $pkg is importable in $RT"; exit 1; fi
done
echo "import torch there: $("$RT/bin/python" -c 'import torch' 2>&1 | tail -1)"

echo "== a model exported in the full environment"
"$FULL" -m cnnkit train --dataset sample --recipe default --epochs 1 --device cpu --out "$WORK/run" --json > /dev/null
"$FULL" -m cnnkit export "$WORK/run" --format onnx --json > /dev/null
"$FULL" - "$WORK" <<'PY'
import sys
from PIL import Image
from cnnkit.data.datasets import load_sample
ds = load_sample()
for i in (0, 500, 999):  # a 0, a 5 and a 9: the sample's test split is ordered by class
    Image.fromarray(ds.test_images[i, 0]).save(f"{sys.argv[1]}/digit_{ds.test_labels[i]}.png")
PY
MODEL="$WORK/run/model.onnx"
CNNKIT="$RT/bin/cnnkit"

echo "== cnnkit predict (runtime-only)"
"$CNNKIT" predict "$MODEL" "$WORK"/digit_*.png --device cpu

echo "== cnnkit.runtime embedded (runtime-only)"
"$RT/bin/python" - "$MODEL" <<'PY'
import sys
import numpy as np
from cnnkit.runtime import Classifier
clf = Classifier(sys.argv[1], device="auto")
p = clf.predict(np.zeros((28, 28), np.uint8), top_k=3)[0]
assert p.label in clf.classes and len(p.top_k) == 3
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "torchvision", "click"))
assert not heavy, heavy
print(f"ok: {clf.providers[0]}, label {p.label!r}, no torch/onnx/click imported")
PY

echo "== cnnkit serve (runtime-only): one request over HTTP"
port=$("$RT/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$CNNKIT" serve "$MODEL" --port "$port" --device cpu > "$WORK/serve.log" 2>&1 &
server=$!
"$RT/bin/python" - "$port" "$WORK" <<'PY'
import json, sys, time, urllib.request
port, work = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
for _ in range(300):
    try:
        if urllib.request.urlopen(base + "/readyz", timeout=1).status == 200:
            break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("server did not become ready")
body = open(f"{work}/digit_5.png", "rb").read()
req = urllib.request.Request(base + "/v1/predict?top_k=2", data=body, headers={"content-type": "image/png"})
answer = json.load(urllib.request.urlopen(req, timeout=10))
print("POST /v1/predict:", json.dumps(answer)[:200])
assert answer["predictions"][0]["label"] in "0123456789"
PY
kill -TERM "$server"; wait "$server"; server=""
grep -q "torch" "$WORK/serve.log" && { echo "FAIL: serve mentioned torch"; cat "$WORK/serve.log"; exit 1; }

echo "== cnnkit doctor and bench --backends onnx (runtime-only)"
"$CNNKIT" doctor --json > "$WORK/doctor.json" || true  # exit 1 only where a GPU is visible; its JSON is checked below
"$RT/bin/python" -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['torch']['version'] is None; print('doctor ok:', d['onnxruntime']['available_providers'])" "$WORK/doctor.json"
"$CNNKIT" bench "$MODEL" --backends onnx --batch-sizes 1,64 --min-time 0.2

echo "== cnnkit train (runtime-only) must name the extra"
if "$CNNKIT" train --dataset sample > "$WORK/train.out" 2> "$WORK/train.err"; then echo "FAIL: train ran"; exit 1; fi
cat "$WORK/train.err"
grep -qx "Error: cnnkit train needs the 'train' extra (torch is not installed): pip install 'cnnkit\[train\]'" "$WORK/train.err"

echo "== install sizes"
du -sh .venv "$RT"
echo "runtime-only install: OK"
