# The commands everyone uses: `make demo` and `make test` work on a fresh machine; each sets up
# what it needs (a virtualenv in .venv, the Rust extension built by maturin) by itself.
#
# `make demo` installs what the proxy needs to run and nothing else; `make test` adds the
# developer tools (the `dev` extra). The Python version is checked before anything is built, and
# a .venv made by a Python that is too old (or no longer runs) is removed and made again.
# Parallel runs (two `make test`, a `make demo` beside them) take turns on .venv's setup steps.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8787
POLICY ?= policies/default.yaml
DEMO_ARGS ?=
IMAGE ?= localhost/edgeproxy:dev
CONTAINER ?= $(shell command -v podman || command -v docker || echo podman)
RUST_SOURCES := $(shell find rust -name '*.rs' -o -name Cargo.toml) Cargo.toml Cargo.lock
# One setup step at a time across parallel make runs in this checkout.
LOCKED := flock .venv.lock

.PHONY: check-python setup build dev demo serve sim test test-rust test-python lint fmt wheel image \
	bench loadtest soak fault-matrix clean redis-server fleet-bench

# The interpreter that makes .venv must be 3.11 or newer (maturin would say so only after
# compiling the Rust extension); a .venv whose Python is older or broken goes.
check-python:
	@ok='import sys; sys.exit(sys.version_info < (3, 11))'; \
	if ! $(PYTHON) -c "$$ok" 2>/dev/null; then \
	  found=$$($(PYTHON) --version 2>/dev/null || echo "not found"); \
	  echo "edgeproxy needs Python 3.11 or newer, and '$(PYTHON)' is: $$found"; \
	  echo "Install Python 3.11+ and run: make $(or $(MAKECMDGOALS),demo) PYTHON=python3.11"; \
	  exit 1; \
	fi; \
	if [ -e $(BIN)/python ] && ! $(BIN)/python -c "$$ok" 2>/dev/null; then \
	  echo "$(VENV) was made by $$($(BIN)/python --version 2>&1 || echo 'a Python that no longer runs'): making it again"; \
	  $(LOCKED) rm -rf $(VENV); \
	fi; \
	command -v cargo >/dev/null || { echo "cargo is required to build the Rust extension (https://rustup.rs)"; exit 1; }

# Each entry point checks Python first, then brings the stamps up to date in a second make (which
# sees .venv as it is after the check).
setup build dev: check-python
	@$(MAKE) --no-print-directory -s $(VENV)/.$@

# The virtualenv and maturin.
$(VENV)/.setup: pyproject.toml
	@$(LOCKED) bash -c 'test -x $(BIN)/python || { echo "making $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }; \
	  $(BIN)/python -m pip install --quiet --upgrade pip "maturin>=1.7,<2"'
	@touch $@

# maturin builds the Rust extension (release mode) and installs the package with its runtime
# dependencies only; it reruns whenever a Rust source or pyproject.toml changes. Its ~100 lines
# of compiler output go to .venv/build.log (shown when the build fails).
$(VENV)/.build: $(VENV)/.setup $(RUST_SOURCES) pyproject.toml
	@echo "building the Rust extension and installing edgeproxy into $(VENV) (a few minutes the first time)"
	@$(LOCKED) $(BIN)/maturin develop --release > $(VENV)/build.log 2>&1 || \
	  { tail -n 40 $(VENV)/build.log; echo "the build failed: the whole log is in $(VENV)/build.log"; exit 1; }
	@touch $@

# The developer tools: the `dev` extra of pyproject.toml (pytest, ruff, mypy, the SDKs, ...).
$(VENV)/.dev: $(VENV)/.build pyproject.toml
	@echo "installing the developer tools (the dev extra) into $(VENV)"
	@$(LOCKED) $(BIN)/python -c 'import subprocess, sys, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]; sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", *deps]))'
	@touch $@

demo: build
	@$(BIN)/edgeproxy demo --policy $(POLICY) --port $(PORT) $(DEMO_ARGS)

serve: build
	@$(BIN)/edgeproxy serve --policy $(POLICY) --port $(PORT)

sim: build
	@$(BIN)/edgeproxy sim --policy $(POLICY)

test: dev lint test-rust test-python

test-rust:
	cargo test --workspace --quiet

test-python: dev redis-server
	$(BIN)/python -m pytest -q

# The fleet's tests (tests/fixtures/redis.py) start Debian's redis-server on free ports: installed
# here when missing (CI runs as root; elsewhere through sudo). Without it those tests fail, never
# skip.
redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian's package; the fleet's tests start it)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  command -v redis-server >/dev/null; }

lint: dev
	$(BIN)/ruff check python tests bench loadtests tools
	$(BIN)/ruff format --check python tests bench loadtests tools
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest edgeproxy._core
	$(BIN)/python tools/import_graph.py
	$(BIN)/edgeproxy policy check $$(find policies -name '*.yaml' | sort)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

fmt: dev
	$(BIN)/ruff format python tests bench loadtests tools
	$(BIN)/ruff check --fix python tests bench loadtests tools
	cargo fmt --all

# The wheel (abi3: one file for CPython 3.11+) in dist/: the Rust extension, the Python package
# and its data (the built-in policy), LICENSE. `pip install dist/edgeproxy-*.whl` anywhere.
wheel: setup
	@rm -f dist/edgeproxy-*.whl
	$(BIN)/maturin build --release --out dist
	@ls dist/edgeproxy-*.whl

# The container image (Containerfile; docs/deploy.md): the wheel built inside the image's build
# stage, or with WHEEL_SOURCE=context the one `make wheel` puts in dist/. The stage is named
# explicitly (podman 4's buildah does not expand an ARG's default in FROM); podman needs the
# docker format for HEALTHCHECK. IMAGE_ARGS: more build flags (base images, --network ...).
WHEEL_SOURCE ?= source
image: $(if $(filter context,$(WHEEL_SOURCE)),wheel)
	$(CONTAINER) build $(if $(findstring podman,$(CONTAINER)),--format docker) -f Containerfile \
	  -t $(IMAGE) --build-arg WHEEL_SOURCE=$(WHEEL_SOURCE) $(IMAGE_ARGS) .

# Load tests, benchmarks and the soak (never part of `make test`). They install the `load` extra of
# pyproject.toml (locust, matplotlib) into .venv on first use; bench and soak also install Debian's
# nginx-light and wrk when missing, and `make bench` puts LiteLLM into .bench-venv (not .venv).
SCENARIO ?= steady-chat
SOAK_MINUTES ?= 30
$(VENV)/.load: $(VENV)/.build pyproject.toml
	@$(LOCKED) $(BIN)/python -c 'import subprocess, sys, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["load"]; sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", *deps]))'
	@touch $@

loadtest: build
	@$(MAKE) --no-print-directory -s $(VENV)/.load
	$(BIN)/python -m loadtests.run $(SCENARIO) $(if $(LOADTEST_SECONDS),--seconds $(LOADTEST_SECONDS)) $(if $(USERS),--users $(USERS))

bench: build
	@$(MAKE) --no-print-directory -s $(VENV)/.load
	$(BIN)/python -m bench.run_bench $(BENCH_ARGS)

soak: build
	@$(MAKE) --no-print-directory -s $(VENV)/.load
	$(BIN)/python -m loadtests.soak --minutes $(SOAK_MINUTES)

# The failover fault matrix of docs/failover.md: the 0-100 % primary-failure sweep and the
# outage rows (a measurement, not a test; about half a minute). FAULT_MATRIX_ARGS="--requests N"...
fault-matrix: build
	$(BIN)/python bench/fault_matrix.py $(FAULT_MATRIX_ARGS)

# The fleet benchmark of docs/fleet.md: latency with Redis on vs off, and how fast a dead region
# stops receiving traffic fleet-wide vs per sidecar (about a minute). FLEET_BENCH_ARGS="--requests N"
fleet-bench: build redis-server
	$(BIN)/python bench/fleet_bench.py $(FLEET_BENCH_ARGS)

clean:
	rm -rf $(VENV) target dist
