# Two commands a new user needs: `make demo` and `make test`. Both build the virtual
# environment first (a CPU torch wheel pinned so pip never pulls a multi-GB CUDA build).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-slow lint typecheck protos bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/proxal demo

test: $(VENV)/.installed
	$(PY) -m pytest

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy proxal_runtime proxal_store encoder_service proxy_service orchestrator

# Regenerate the gRPC stubs from protos/ (tests/test_protos.py fails when they are stale).
protos: $(VENV)/.installed
	$(PY) protos/generate.py

# Benchmarks print a table and write JSON under bench/results/ (run by hand; noisy on shared CPUs).
# The bench extra adds small-text (pinned), which bench/proxy.py compares against.
bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/proxy.py
	$(PY) bench/sequential.py
	$(PY) bench/encoder.py
	$(PY) bench/store.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
