# closedloop: `make run` sets up and runs the hub; `make test` sets up and passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run demo test test-fast lint format bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install closedloop with its dev tools

run: install ## Set up (secrets, SQLite store, demo source) and serve on :8000 with the demo shop
	$(BIN)/closedloop init
	$(BIN)/closedloop serve --demo

demo: install ## Send the demo shop to a running hub (closedloop demo)
	$(BIN)/closedloop demo

lint: install ## ruff check, ruff format --check, mypy --strict, bandit, pip-audit
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/bandit -q -r src -ll
	$(BIN)/pip-audit --skip-editable --progress-spinner off

format: install ## Format the code with ruff
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: lint ## Lint, then run every test (PostgreSQL cases need CLOSEDLOOP_TEST_POSTGRES_URL)
	$(BIN)/pytest -q

test-fast: install ## Tests without the slow end-to-end ones
	$(BIN)/pytest -q -m "not slow"

bench: install ## Run the benchmarks (figures go to docs/benchmarks.md by hand)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/ingest_bench.py

clean: ## Remove the venv and caches (keeps closedloop.db and .env)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
