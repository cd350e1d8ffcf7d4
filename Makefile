# The set-up a new machine needs is done by these targets themselves: each makes the virtualenv
# (.venv) and installs tidings with its development extras when they are missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tidings demo
	@echo "To repair the dead letters yourself in the web console: $(BIN)/tidings demo --serve (then open http://127.0.0.1:8000/)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/append.py
	$(BIN)/python benchmarks/layers.py
	$(BIN)/python benchmarks/delivery.py
	$(BIN)/python benchmarks/postgres.py
	$(BIN)/python benchmarks/console.py
	$(BIN)/python benchmarks/transports.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
