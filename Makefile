# Two entry points for a fresh clone: `make demo` (train -> export -> verify -> bench, offline) and `make test`.
# Both install everything (cnnkit with the train, serve, plot and dev extras) into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: demo test test-slow lint runtime-check triton-check install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install  # bench names the model.ts it just exported: a TorchScript file is loaded only when named
	$(BIN)/cnnkit train --out $(RUN) --force
	$(BIN)/cnnkit export $(RUN) --format all
	$(BIN)/cnnkit verify $(RUN)/model.onnx $(RUN)/model.ts $(RUN)/model.pt2
	$(BIN)/cnnkit bench $(RUN) $(RUN)/model.ts --json $(RUN)/bench.json --plot $(RUN)/bench.png

test: install
	$(BIN)/python -m pytest -q

# the multi-process tests (torchrun/DDP accuracy, Ctrl-C then --resume, a second Ctrl-C): CI runs them too
test-slow: install
	$(BIN)/python -m pytest -q -m slow

# ruff (lint, format, complexity), the house's sizes, mypy (strict on the torch-free side), import-linter (its imports)
lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/python scripts/check_sizes.py
	$(BIN)/python scripts/check_provenance.py
	$(BIN)/mypy
	$(BIN)/lint-imports

# a second venv with the base install and [serve] only (no torch) runs predict, serve, the runtime, bench
runtime-check: install
	bash scripts/check_runtime_install.sh

# a venv of the system Python with cnnkit[serve,triton] (numpy<2) runs a real Triton server through PyTriton
triton-check: install
	bash scripts/check_triton.sh

clean:
	rm -rf runs .pytest_cache .venv-runtime .venv-triton
