# Two commands a new user needs: `make demo` and `make test`. Both build the virtual
# environment first (a CPU torch wheel pinned so pip never pulls a multi-GB CUDA build).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test system-deps fuzz test-slow lint typecheck protos bench evidence evidence-plasm smoke clean e2e-label-studio

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/proxal demo

# The default run fuzzes each RPC with 250 generated requests to stay near 10 minutes on 2
# cores; `make fuzz` runs the full 1,000 per RPC (tests/fuzz, about 6 minutes on its own).
test: $(VENV)/.installed system-deps
	PROXAL_FUZZ_EXAMPLES=250 $(PY) -m pytest

# The tests run a real PostgreSQL server (tests/postgres.py) and trace fsync with strace:
# Debian's packages, installed when missing (root, or sudo).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || ! command -v strace >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql strace >/dev/null; \
	fi

fuzz: $(VENV)/.installed
	PROXAL_FUZZ_EXAMPLES=1000 $(PY) -m pytest tests/fuzz -rP

test-slow: $(VENV)/.installed system-deps
	$(PY) -m pytest -m slow

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# End to end with a real Label Studio (tests/e2e/test_label_studio.py): Label Studio from
# PyPI in its own virtual environment (its pins clash with ours), offline on SQLite on
# loopback. The first run installs it (a few minutes) and migrates a fresh database.
LS_VENV      ?= .venv-label-studio
LABEL_STUDIO ?= label-studio==1.23.2
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet "$(LABEL_STUDIO)"
	touch $@

e2e-label-studio: $(VENV)/.installed $(LS_VENV)/.installed
	LABEL_STUDIO_BIN=$(CURDIR)/$(LS_VENV)/bin/label-studio $(PY) -m pytest -m e2e -rP tests/e2e/test_label_studio.py

# mypy cannot follow the package-dir mapping (pyproject.toml), so it checks a tree of links
# laid out as installed: build/typecheck/proxal/runtime -> proxal_runtime/, and so on.
typecheck: $(VENV)/.installed
	rm -rf build/typecheck && mkdir -p build/typecheck/proxal
	ln -s $(CURDIR)/protos/proxal/* build/typecheck/proxal/
	ln -s $(CURDIR)/proxal_runtime build/typecheck/proxal/runtime
	ln -s $(CURDIR)/proxal_store build/typecheck/proxal/store
	ln -s $(CURDIR)/encoder_service build/typecheck/proxal/encoder_service
	ln -s $(CURDIR)/proxy_service build/typecheck/proxal/proxy_service
	ln -s $(CURDIR)/orchestrator build/typecheck/proxal/orchestrator_service
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml \
		-p proxal.runtime -p proxal.store -p proxal.encoder_service -p proxal.proxy_service \
		-p proxal.orchestrator_service

# Regenerate the gRPC stubs from protos/ (tests/test_protos.py fails when they are stale).
protos: $(VENV)/.installed
	$(PY) protos/generate.py

# Benchmarks print a table and write JSON under bench/results/ (run by hand; noisy on shared CPUs).
# The bench extra adds small-text (pinned), which bench/proxy.py compares against; bench/load.py
# (50 clients x 100 Selects on one proxy replica) exits non-zero if any request fails.
bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/proxy.py
	$(PY) bench/sequential.py
	$(PY) bench/encoder.py
	$(PY) bench/store.py
	$(PY) bench/load.py
	$(PY) bench/cli.py

# Issue 5's evidence on real data (docs/evidence.md, docs/adapters_acquisition.md): about an
# hour on 2 CPU cores; the two datasets run side by side with one torch thread each.
evidence: $(VENV)/.installed
	$(PY) bench/evidence.py --datasets banking77 --rounds 2 --epochs 4 --threads 1 & \
	$(PY) bench/evidence.py --datasets ag_news --rounds 2 --epochs 4 --threads 1 \
		--test-limit 1000; wait
	$(PY) bench/evidence.py --report-only
	$(PY) bench/adapters_acquisition.py --datasets banking77 --budgets 200 500 --seeds 3 \
		--pool-size 2000 --test-size 1000 --epochs 4 --threads 1
	$(MAKE) evidence-plasm

# Issue 6's evidence (docs/plasm_asm.md, docs/runs/): PLASM under L3-acquires/L6-succeeds
# mismatch, ASM between the two encoders, sample saving ratios; about 1.5 hours on 2 cores.
evidence-plasm: $(VENV)/.installed
	rm -rf /tmp/proxal-plasm-asm
	$(PY) bench/plasm_asm.py --acquire --datasets banking77 --threads 1 & \
	$(PY) bench/plasm_asm.py --acquire --datasets ag_news --threads 1 --test-limit 1000; wait
	$(PY) bench/plasm_asm.py --analyse --threads 2

# Build the container images and run the compose stack for real (deploy/smoke.sh): root,
# Debian's docker.io, no image registry; ~10 min and ~45 GB of disk with the vfs driver.
smoke:
	bash deploy/smoke.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
