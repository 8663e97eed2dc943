#!/usr/bin/env bash
# Pack onnxruntime-gpu for a GPU machine that has no network, only the CPU build of onnxruntime, and takes at most
# 64 MiB per upload (the project's device machine). The 255 MB wheel becomes an xz tarball of its installed files
# without the TensorRT provider (not used by cnnkit), split into parts of at most 56 MiB under .ortgpu/pN
# (ignored through .git/info/exclude). Carry one part per call, back to back, each copied to /tmp/ortgpu; then
#   ORT_PARTS=/tmp/ortgpu PHASE=all bash benchmarks/gpu_check.sh
# checks the SHA-256, unpacks it into /tmp/ort-site and puts it first on PYTHONPATH.
#   bash benchmarks/ort_gpu_pack.sh [VERSION]     (default 1.31.1, CUDA 13; the device's Python is CPython 3.12)
set -euo pipefail
ver=${1:-1.31.1}
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.ortgpu/' .git/info/exclude 2>/dev/null || echo '/.ortgpu/' >> .git/info/exclude
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$tmp/dl" "onnxruntime-gpu==$ver"
mkdir "$tmp/site"
(cd "$tmp/site" && python3 -m zipfile -e "$tmp"/dl/*.whl . && rm -f onnxruntime/capi/libonnxruntime_providers_tensorrt.so)
tar -C "$tmp/site" -cf - . | xz -9 -T0 > "$tmp/ort.tar.xz"
rm -rf .ortgpu && mkdir -p .ortgpu
split -b 56m -d -a 1 "$tmp/ort.tar.xz" "$tmp/part."
n=0
for f in "$tmp"/part.*; do n=$((n + 1)); mkdir -p ".ortgpu/p$n"; mv "$f" ".ortgpu/p$n/"; done
sha256sum "$tmp/ort.tar.xz" | cut -d' ' -f1 > .ortgpu/p1/SHA256
echo "onnxruntime-gpu $ver: $(du -m "$tmp/ort.tar.xz" | cut -f1) MiB packed in $n part(s): $(ls -d .ortgpu/p*)"
