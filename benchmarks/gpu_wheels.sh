#!/usr/bin/env bash
# Wheels the GPU machine's image lacks, for benchmarks/gpu_check.sh (WHEELS=.whl): the `serve` extra's starlette,
# uvicorn, python-multipart and httptools (anyio, h11, prometheus-client and uvloop are in the image) and NVIDIA's
# perf_analyzer (its binary needs glibc >= 2.38: the image's Ubuntu has it). CPython 3.12, x86-64, into .whl/
# (ignored through .git/info/exclude); carry .whl with the last part of onnxruntime-gpu (about 8 MiB).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
platforms=()
for n in 17 27 28 31 34 35 38 39; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${platforms[@]}" -d .whl \
  'starlette>=0.37' 'uvicorn>=0.29' 'python-multipart>=0.0.9' httptools 'perf-analyzer>=2.50' 2>&1 \
  | grep -v '^WARNING: Location' || true
ls -la .whl
echo "wheels: $(du -cm .whl/*.whl | tail -1 | cut -f1) MiB in .whl/"
