# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: venv up example test lint fmt clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,rabbitmq,nats,postgres]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/tidings up

example: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src services tests examples benchmarks
	$(BIN)/ruff format --check src services tests examples benchmarks
	$(BIN)/mypy src services

fmt: $(STAMP)
	$(BIN)/ruff check --fix src services tests examples benchmarks
	$(BIN)/ruff format src services tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
