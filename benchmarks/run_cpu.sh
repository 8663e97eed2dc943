#!/usr/bin/env bash
# Reproduce every committed CPU result in benchmarks/results/ (one after another: they share the cores).
#   bash benchmarks/run_cpu.sh        (uses .venv/bin/python if present)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
RUN=$(mktemp -d)/run
trap 'rm -rf "$(dirname "$RUN")"' EXIT
"$PY" benchmarks/cli_record.py train_sample_cpu.json train --dataset sample --out "$RUN" --json
"$PY" benchmarks/cli_record.py export_cpu.json export "$RUN" --format all --json
"$PY" -m cnnkit bench "$RUN" --json benchmarks/results/bench_cpu.json --csv benchmarks/results/bench_cpu.csv \
  --plot benchmarks/results/bench_cpu.png
"$PY" benchmarks/runtime_overhead.py --model "$RUN/model.onnx"
"$PY" benchmarks/serve_load.py --model "$RUN/model.onnx" --clients 32 --seconds 10
"$PY" benchmarks/train_speed.py
"$PY" benchmarks/variants.py
"$PY" benchmarks/recipe.py
"$PY" benchmarks/train_scaling.py
"$PY" benchmarks/serve_protocols.py --model "$RUN/model.onnx"
"$PY" benchmarks/serve_attacks.py --model "$RUN/model.onnx"
"$PY" benchmarks/perf_analyzer.py --model "$RUN/model.onnx"
"$PY" benchmarks/serve_grpc.py --model "$RUN/model.onnx"
# engines and peers: their own venvs, one optimized run shared by the three
bash benchmarks/peers.sh "$RUN.peers"
"$PY" benchmarks/optimize_record.py "$RUN.peers"
bash benchmarks/peers_serving.sh "$RUN.peers" --rounds 5 --seconds 2
