# Two entry points for a fresh clone: `make demo` (train -> export -> verify -> bench, offline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/cnnkit train --out $(RUN)
	$(BIN)/cnnkit export $(RUN) --format all
	$(BIN)/cnnkit verify $(RUN)/model.onnx $(RUN)/model.ts
	$(BIN)/cnnkit bench $(RUN) --json $(RUN)/bench.json --plot $(RUN)/bench.png

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
