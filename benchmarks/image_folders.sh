#!/usr/bin/env bash
# The image-folder benchmark's set-up, all offline-installable: Fashion-MNIST from Debian's package, scikit-image (for
# the photos inside its wheel) in a venv of its own (benchmarks/.venv-photos, never in cnnkit's dependencies), the
# photo-patch tree made from them; then benchmarks/image_folders.py with the arguments given. Run from the
# repository root after `make install`.
set -euo pipefail
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get install -y -q dataset-fashion-mnist
fi
cd "$(dirname "$0")"
if [ ! -x .venv-photos/bin/python ]; then
    python3 -m venv .venv-photos
    .venv-photos/bin/pip install -q scikit-image
fi
PHOTOS=${PHOTOS:-$(mktemp -d)/photos}
[ -d "$PHOTOS" ] || .venv-photos/bin/python make_photo_patches.py "$PHOTOS"
exec ../.venv/bin/python image_folders.py --photos "$PHOTOS" "$@"
