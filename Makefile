# The few verbs people type. Everything installs into .venv from pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench bench-scale clean browser postgres

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## Temporal dev server + worker + API + demo data, on embedded defaults
	$(BIN)/tollway dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

browser:  ## Debian's Chromium for the checkout browser test (skipped, with a reason, without it)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get install -y -q chromium >/dev/null; } || echo "chromium unavailable: browser test will be skipped"

postgres:  ## Debian's PostgreSQL server binaries for the database-outage test (skipped without them)
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get install -y -q postgresql >/dev/null; } || echo "postgresql unavailable: the outage test will be skipped"

test: lint browser postgres  ## lint, type-check, then the whole suite against a real Temporal dev server
	$(BIN)/pytest

bench: $(STAMP)  ## HTTP layer vs the raw Temporal client, side by side in one run
	$(BIN)/python -m bench.run

bench-scale: $(STAMP)  ## create p50 and memory at 0, 5 000 and 10 000 parked executions; production settings
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
