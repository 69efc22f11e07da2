# Quick start (see README):  `make demo`  and  `make test`.
# TORCH pins the PyTorch build to install first; the package itself only requires torch>=2.3.
# On the 2-core CPU machines this project is developed on, torch==2.13.0 is a local CPU wheel.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/fsqkit demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/bench_fsq.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
