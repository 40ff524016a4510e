# The commands of the README: `make dev` (set up, then run API + worker), `make test` (every test, as CI runs it) and
# `make test-fast` (the edit loop: unit, integration and deploy checks, without slow or GPU tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel on machines that have it locally; on a GPU machine any torch 2.x CUDA build satisfies the project too.
TORCH_SPEC ?= torch==2.13.0
REDIS_PORT ?= 6379

.PHONY: setup dev test test-fast lint redis test-tools

$(BIN)/imagegen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[worker,dev]'
	@touch $@

setup: $(BIN)/imagegen

dev: setup
	$(BIN)/imagegen dev

# Tests use a real Redis on 127.0.0.1:$(REDIS_PORT) (their own db index); start one when nothing answers.
redis: setup
	@$(BIN)/python -c "import redis; redis.Redis(port=$(REDIS_PORT), socket_connect_timeout=1).ping()" 2>/dev/null \
	  || redis-server --daemonize yes --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tests that need a browser or Prometheus are skipped without them: say so before the run, not only in its summary.
test-tools:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || echo "make test: no chromium on PATH: the playground's browser tests will be skipped (apt-get install chromium fonts-dejavu-core)"
	@command -v prometheus >/dev/null 2>&1 \
	  || echo "make test: no prometheus on PATH: the Prometheus tests will be skipped (apt-get install prometheus)"
	@command -v redis-sentinel >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 \
	  || echo "make test: no redis-sentinel or redis-server on PATH: the Sentinel failover tests will be skipped (apt-get install redis-server redis-sentinel)"

test: setup redis lint test-tools
	$(BIN)/python -m pytest --durations=15

# No lint, no end-to-end processes, no `slow` or `gpu` tests: the loop to run while editing.
test-fast: setup redis
	$(BIN)/python -m pytest -m "not slow and not gpu" tests/unit tests/integration tests/deploy
