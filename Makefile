# blockplane: every target that needs the host prepared runs `setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
IMAGES ?= /var/lib/blockplane/images
PYTEST_ARGS ?=
# Two pytest-xdist workers; the Linux-guest modules still run one after another (tests/conftest.py).
PYTEST_WORKERS ?= 2
export BLOCKPLANE_IMAGES := $(IMAGES)

.PHONY: setup host venv guest lint unit test demo clean

setup: host venv guest

host:
	bash scripts/setup-host.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

guest:
	bash scripts/build-guest.sh $(IMAGES)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest -q tests/unit

# The tests marked `alone` make a timing claim about one guest on a quiet host (the thin stress
# case's 0 pauses): they run after the others, with nothing beside them. Exit 5 is "none
# selected" (a PYTEST_ARGS that picks other tests).
test: setup
	$(MAKE) lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) -m "not alone" $(PYTEST_ARGS)
	$(BIN)/pytest -q -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

demo: setup
	$(BIN)/blockplane demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
