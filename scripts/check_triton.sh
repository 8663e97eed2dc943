#!/usr/bin/env bash
# `cnnkit serve --engine triton` for real (run by CI after `make test`): a venv of the operating system's Python
# (PyTriton's Python backend stub fails under a pyenv-built 3.11.7) with cnnkit[serve,triton] -- so numpy<2 --
# and tritonclient starts a real Triton server through PyTriton and compares its answers with `cnnkit serve` on a
# model exported in the full environment (.venv, made by `make install`).
#   bash scripts/check_triton.sh      (TRITON_PYTHON=/usr/bin/python3.11, TRITON_VENV=.venv-triton; kept for reuse)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pip_quiet.sh
PY=${TRITON_PYTHON:-/usr/bin/python3.11}
VENV=${TRITON_VENV:-.venv-triton}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ] || [ ! -x "$PY" ]; then
  # a developer's machine without it may skip; CI may not (a check that cannot run is a failure there)
  if [ "${CI:-}" = true ]; then
    echo "FAIL: PyTriton needs Linux x86-64 and a system Python ($PY not found); set TRITON_PYTHON"
    exit 1
  fi
  echo "SKIP: PyTriton needs Linux x86-64 and a system Python ($PY not found); set TRITON_PYTHON"
  exit 0
fi
echo "== triton venv ($VENV, from $PY): pip install '.[serve,triton]' tritonclient"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_quiet "$VENV" --upgrade pip
pip_quiet "$VENV" --force-reinstall --no-deps .
pip_quiet "$VENV" '.[serve,triton]' 'tritonclient[http,grpc]>=2.40' 'pytest>=8' 'httpx>=0.27'
"$VENV/bin/python" -c "import numpy, pytriton; print('numpy', numpy.__version__, '- pytriton ok')"

echo "== a model exported in the full environment"
.venv/bin/python -m cnnkit train --dataset sample --recipe default --epochs 1 --device cpu --out "$WORK/run" --json > /dev/null
.venv/bin/python -m cnnkit export "$WORK/run" --format onnx --json > /dev/null

echo "== tests/integration/test_triton_engine.py in $VENV"
CNNKIT_REQUIRE_TRITON=1 CNNKIT_TEST_ONNX="$WORK/run/model.onnx" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/integration/test_triton_engine.py -rs
