#!/usr/bin/env bash
# Wheels cnnkit needs that the device machine's image lacks (it has torch, onnx, onnxscript, click, numpy, tqdm,
# pytest and CPU onnxruntime; no network). Downloads them for its CPython 3.12 into .devdeps/ (ignored by git);
# carry that folder in the device call and gpu_check.sh installs it into a private target first.
#   bash benchmarks/device_deps.sh        then   run: carry [".devdeps"] ...
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.devdeps/' .git/info/exclude 2>/dev/null || echo '/.devdeps/' >> .git/info/exclude
rm -rf .devdeps && mkdir -p .devdeps
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .devdeps safetensors Pillow
du -sh .devdeps && ls .devdeps
