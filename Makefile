# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up on the way.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RECIPE ?= recipes/quickstart.yaml
PYTEST_ARGS ?=

.PHONY: install run test test-fast bench clean system-deps

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/edge-pipeline run $(RECIPE)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only (no end-to-end recipe runs).
test-fast: install
	$(PY) -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/quickstart.py

clean:
	rm -rf runs .pytest_cache
