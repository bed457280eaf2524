# One-line entry points for a fresh machine with Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.muva/dagster_home

.PHONY: demo test ui bench down clean

$(BIN)/muva-refresh: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/muva-refresh  ## start the embedded production+staging pair and refresh staging
	$(BIN)/muva-refresh demo up
	$(BIN)/muva-refresh refresh
	@echo
	@echo "Open the Dagster UI with:  make ui   (then browse to http://127.0.0.1:3000)"

test: $(BIN)/muva-refresh  ## the whole test suite, on real PostgreSQL
	$(BIN)/pytest

ui: $(BIN)/muva-refresh  ## dagster dev on the same instance the CLI uses
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

bench: $(BIN)/muva-refresh  ## the performance figures
	$(BIN)/python bench/benchmark.py

down: $(BIN)/muva-refresh
	$(BIN)/muva-refresh demo down

clean: down
	rm -rf .muva .env
