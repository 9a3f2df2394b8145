# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: venv up example test lint fmt clean tools chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,rabbitmq,nats,postgres,otel]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/tidings up

example: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP) tools chromium
	$(BIN)/python -m pytest

# The dashboard's browser test drives Debian's chromium (never a browser Playwright downloads).
chromium:
	@test -x /usr/bin/chromium || apt-get install -y --no-install-recommends chromium \
		|| echo "chromium not installed: the dashboard browser test skips (and fails under CI=true)"

# Node.js tools the tests run (the AsyncAPI parser); installed once, without install scripts.
tools: tests/tools/node_modules

tests/tools/node_modules:
	@command -v npm >/dev/null || { echo "npm not found: tests that need Node.js tools skip (and fail under CI=true)"; exit 0; }; \
	if [ -f tests/tools/package-lock.json ]; then npm ci --prefix tests/tools --ignore-scripts --no-audit --no-fund; \
	else npm install --prefix tests/tools --ignore-scripts --no-audit --no-fund; fi

lint: $(STAMP)
	$(BIN)/ruff check src services tests examples benchmarks
	$(BIN)/ruff format --check src services tests examples benchmarks
	$(BIN)/mypy src services

fmt: $(STAMP)
	$(BIN)/ruff check --fix src services tests examples benchmarks
	$(BIN)/ruff format src services tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
