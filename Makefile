# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up on the way.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RECIPE ?= recipes/quickstart.yaml
PYTEST_ARGS ?=

.PHONY: install lint run test test-fast bench bench-profiler clean system-deps emulator runtimes

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages for device profiling: the aarch64 emulator (qemu-user-static, mmdebstrap), the ssh
# transport and its loopback test server (openssh-client/-server), and adb; and a headless browser
# (chromium) that the report tests render report.html in. A no-op when present.
SYSTEM_TOOLS := /usr/bin/qemu-aarch64-static /usr/bin/mmdebstrap /usr/sbin/sshd /usr/bin/ssh /usr/bin/adb /usr/bin/chromium
SYSTEM_PACKAGES := qemu-user-static mmdebstrap openssh-server openssh-client adb chromium
system-deps:
	@missing=""; for f in $(SYSTEM_TOOLS); do test -x $$f || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "error: need root (or sudo) to apt-get install $(SYSTEM_PACKAGES)"; exit 2; fi; \
	  echo "installing system packages: $(SYSTEM_PACKAGES)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	fi

# The aarch64 emulator's sysroot + wheels, built once under ~/.cache/edge-pipeline (network only here).
emulator: install system-deps
	@$(PY) -m edge_pipeline.profiling.emulator --quiet

# A side venv with tflite-runtime 2.14 (what many Raspberry Pi OS images still ship), so the export
# stage's device-runtime check really loads models on it (network only here; a no-op when present).
runtimes: install
	@$(PY) -m edge_pipeline.convert.compat install tflite-runtime 2.14.0

run: install
	$(VENV)/bin/edge-pipeline run $(RECIPE)

# Quality gates (README "Development"): ruff (lint), mypy (types); the layer contract (import-linter)
# runs inside the test suite (tests/test_architecture.py).
lint: install
	$(VENV)/bin/ruff check edge_pipeline tests benchmarks
	$(VENV)/bin/mypy

test: install system-deps emulator runtimes lint
	$(PY) -m pytest --durations=40 $(PYTEST_ARGS)

# Unit tests only (no end-to-end recipe runs).
test-fast: install
	$(PY) -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/quickstart.py

# Our agent vs Google's litert-benchmark on the same files (builds a side venv with ai-edge-litert 2.3.0).
bench-profiler: install
	$(PY) benchmarks/profiler_agreement.py

clean:
	rm -rf runs .pytest_cache
