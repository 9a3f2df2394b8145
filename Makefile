# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: venv up example test lint fmt clean tools chromium bench bench-quick audit chaos lock

venv: $(STAMP)

EXTRAS := dev,rabbitmq,nats,postgres,otel

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[$(EXTRAS)]'
	touch $(STAMP)

# Pin what a fresh venv resolves today (after a change of dependencies in pyproject.toml).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	{ sed -n '1,2p' requirements.lock; .venv-lock/bin/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

up: $(STAMP)
	$(BIN)/tidings up

example: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP) tools chromium
	$(BIN)/python -m pytest

# The chaos suite: faults against real processes on every backend, one summary line each.
# CHAOS_SIZE=ci (default: 500 people; 10,000 updates on SQLite, 3,000 on each real broker),
# full (10,000 on each) or large (50,000 on each).
CHAOS_SIZE ?= ci
CHAOS_BACKENDS ?= sqlite,amqp,nats
chaos: $(STAMP)
	CHAOS_SIZE=$(CHAOS_SIZE) CHAOS_BACKENDS=$(CHAOS_BACKENDS) $(BIN)/python -m pytest tests/chaos -m chaos -q

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

# Benchmarks (not part of `make test`): their own tools (FastStream, matplotlib, psutil,
# py-spy, pyinstrument) go into .venv only here. RabbitMQ, NATS and PostgreSQL on 127.0.0.1
# are used when reachable (`.ci/run` starts them); a backend that is not is skipped.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench.py

bench-quick: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench.py --quick --out /tmp/tidings-bench-quick

# Known vulnerabilities in the locked dependencies, from PyPI's advisory data (so it needs
# the network). --strict: a dependency that could not be checked fails the target as well, so
# an unreachable database never passes as "no known vulnerabilities".
audit: $(STAMP)
	@$(BIN)/pip-audit --strict --no-deps --disable-pip -r requirements.lock --progress-spinner off \
		|| { echo "audit: FAILED (a known vulnerability, or dependencies that could not be checked: is PyPI reachable?)" >&2; exit 1; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
