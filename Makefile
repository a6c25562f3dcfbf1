# The template's own tasks. `make demo` and `make test` each do all their set-up.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
PYTEST_ARGS ?=

.PHONY: help demo test lint relock clean

help: ## Show the tasks
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.synced: requirements-dev.txt
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv==$(UV_VERSION); }
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements-dev.txt
	touch $@

demo: $(BIN)/.synced ## Bake with the defaults into build/demo and run the generated repo's lifecycle
	$(BIN)/python tools/demo.py --out build/demo

test: $(BIN)/.synced ## Run the template's tests (bakes every configuration, runs the baked repos)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.synced ## ruff on the template's own code
	$(BIN)/ruff check hooks tests tools bench
	$(BIN)/ruff format --check hooks tests tools bench

relock: $(BIN)/.synced ## Refresh the generated repo's uv.lock after its dependencies change
	$(BIN)/python tools/relock.py

clean: ## Remove the demo output and caches
	rm -rf build .pytest_cache .ruff_cache
