#!/usr/bin/env bash
# The recipe benchmark's set-up: Fashion-MNIST from Debian's package (never needed by the tests or CI), then
# benchmarks/recipe.py with the arguments given. Run from the repository root after `make install`.
set -euo pipefail
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get install -y -q dataset-fashion-mnist
fi
cd "$(dirname "$0")"
exec ../.venv/bin/python recipe.py "$@"
