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

test: $(BIN)/muva-refresh  ## the import order, then the whole test suite on real PostgreSQL
	$(BIN)/ruff check .
	$(BIN)/pytest

# MUVA_DAGSTER_URL: the deploy sensor reloads the code location itself when production's graph changes.
ui: $(BIN)/muva-refresh  ## dagster dev on the same instance the CLI uses
	$(BIN)/python -c 'from muva_refresh.instance import ensure_dagster_home; from muva_refresh.settings import Settings; ensure_dagster_home(Settings.load())'
	MUVA_DAGSTER_URL=http://127.0.0.1:3000 $(BIN)/dagster dev -h 127.0.0.1 -p 3000

# pgcopydb is one of the baselines: Debian's is installed when missing, and apt failing stops the run.
# A quick run: make bench BENCH_ARGS="--shapes seed,wide --repeat 1 --wide-mb 100"
bench: $(BIN)/muva-refresh  ## the performance figures, beside pgcopydb, psql and pg_dump/pg_restore
	@if ! command -v pgcopydb >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgcopydb; \
	fi
	$(BIN)/python bench/benchmark.py $(BENCH_ARGS)

down: $(BIN)/muva-refresh
	$(BIN)/muva-refresh demo down

clean: down
	rm -rf .muva .env
