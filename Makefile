# The commands everyone uses: `make demo` and `make test` work on a fresh machine; each sets up
# what it needs (a virtualenv in .venv, the Rust extension built by maturin) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8787
POLICY ?= policies/default.yaml
RUST_SOURCES := $(shell find rust -name '*.rs' -o -name Cargo.toml) Cargo.toml Cargo.lock

.PHONY: setup build demo serve sim test test-rust test-python lint fmt bench loadtest soak fault-matrix clean

setup: $(VENV)/.deps
build: $(VENV)/.built

# The virtualenv and maturin; everything else is installed by maturin develop below.
$(VENV)/.deps: pyproject.toml
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "maturin>=1.7,<2"
	@touch $@

# maturin builds the Rust extension (release mode) and installs the package with its Python
# dependencies and the dev extras; it reruns whenever a Rust source or pyproject.toml changes.
$(VENV)/.built: $(VENV)/.deps $(RUST_SOURCES)
	@echo "building the Rust extension and installing edgeproxy into $(VENV) ..."
	$(BIN)/maturin develop --release --extras dev
	@touch $@

demo: build
	$(BIN)/edgeproxy demo --policy $(POLICY) --port $(PORT)

serve: build
	$(BIN)/edgeproxy serve --policy $(POLICY) --port $(PORT)

sim: build
	$(BIN)/edgeproxy sim --policy $(POLICY)

test: build lint test-rust test-python

test-rust:
	cargo test --workspace --quiet

test-python: build
	$(BIN)/python -m pytest -q

lint: build
	$(BIN)/ruff check python tests bench loadtests tools
	$(BIN)/ruff format --check python tests bench loadtests tools
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest edgeproxy._core
	$(BIN)/python tools/import_graph.py
	$(BIN)/edgeproxy policy check $$(find policies -name '*.yaml' | sort)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

fmt: build
	$(BIN)/ruff format python tests bench loadtests tools
	$(BIN)/ruff check --fix python tests bench loadtests tools
	cargo fmt --all

# Load tests, benchmarks and the soak (never part of `make test`). They install the `load` extra of
# pyproject.toml (locust, matplotlib) into .venv on first use; bench and soak also install Debian's
# nginx-light and wrk when missing, and `make bench` puts LiteLLM into .bench-venv (not .venv).
SCENARIO ?= steady-chat
SOAK_MINUTES ?= 30
$(VENV)/.load: $(VENV)/.built pyproject.toml
	$(BIN)/python -c 'import subprocess, sys, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["load"]; sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", *deps]))'
	@touch $@

loadtest: build $(VENV)/.load
	$(BIN)/python -m loadtests.run $(SCENARIO) $(if $(LOADTEST_SECONDS),--seconds $(LOADTEST_SECONDS)) $(if $(USERS),--users $(USERS))

bench: build $(VENV)/.load
	$(BIN)/python -m bench.run_bench $(BENCH_ARGS)

soak: build $(VENV)/.load
	$(BIN)/python -m loadtests.soak --minutes $(SOAK_MINUTES)

# The failover fault matrix of docs/failover.md: the 0-100 % primary-failure sweep and the
# outage rows (a measurement, not a test; about half a minute). FAULT_MATRIX_ARGS="--requests N"...
fault-matrix: build
	$(BIN)/python bench/fault_matrix.py $(FAULT_MATRIX_ARGS)

clean:
	rm -rf $(VENV) target
