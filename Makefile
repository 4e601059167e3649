# KB Explorer: the two commands of the README, and a few helpers.
# `make app`  sets everything up and serves the app on http://localhost:8501
# `make test` sets everything up and runs lint, type checks and the whole test suite
.PHONY: app test setup lint notebooks bench clean-db

VENV := .venv
PORT ?= 8501

setup:
	@bash scripts/setup.sh

app: setup
	$(VENV)/bin/kb serve --port $(PORT)

lint: setup
	$(VENV)/bin/ruff check kb ui tests migrations bench app.py pages
	$(VENV)/bin/ruff format --check kb ui tests migrations bench app.py pages
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest

bench: setup
	mkdir -p bench/results
	$(VENV)/bin/python -m bench --tier $(or $(TIER),S) --out bench/results/$(or $(TIER),S).json

notebooks: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-db: setup
	$(VENV)/bin/kb db stop
