# The two commands of the README: `make dev` (set up, then run API + worker) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel on machines that have it locally; on a GPU machine any torch 2.x CUDA build satisfies the project too.
TORCH_SPEC ?= torch==2.13.0
REDIS_PORT ?= 6379

.PHONY: setup dev test lint redis

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

test: setup redis lint
	$(BIN)/python -m pytest
