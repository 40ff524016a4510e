"""A real API and worker (tiny model) on free ports, shared by the tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import TEST_REDIS_URL
from tests.e2e.processes import Process, Stack, free_port, wait_until


def stack_env(cache_dir: Path) -> dict[str, str]:
    """Environment of the processes under test."""
    return {
        "IMAGEGEN_REDIS_URL": TEST_REDIS_URL,
        "IMAGEGEN_MODEL": "tiny",
        "IMAGEGEN_CACHE_DIR": str(cache_dir),
        "IMAGEGEN_HEARTBEAT_SECONDS": "1",
        "IMAGEGEN_WARMUP_STEPS": "1",
        "IMAGEGEN_LOG_LEVEL": "INFO",
        # One job at a time, so tests of queue order and positions see each job; batching has its own tests.
        "IMAGEGEN_MAX_BATCH": "1",
        # Fault tests submit while the worker is down; a model without a live worker answers 503 otherwise.
        "IMAGEGEN_QUEUE_WITHOUT_WORKERS": "true",
    }


@contextmanager
def started_stack(
    tmp: Path, env: dict[str, str], worker_env: dict[str, str] | None = None, api_key: str | None = None
) -> Iterator[Stack]:
    """A ready API and worker on the flushed test Redis (its client sending `api_key`, if any); stopped, and the
    Redis flushed, afterwards."""
    redis = Redis.from_url(TEST_REDIS_URL)
    redis.flushdb()
    running = Stack(tmp, env, worker_env)
    if api_key:
        running.client.headers["Authorization"] = f"Bearer {api_key}"
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        redis.flushdb()
        redis.close()


@contextmanager
def two_model_stack(tmp: Path, cache_dir: Path, models_toml: str, **env: str) -> Iterator[tuple[Stack, Process]]:
    """An API with two workers, of the models file's `circles` (worker-circles, the stack's own) and `squares`
    (worker-squares, the second process), both live before it is yielded; `env` adds to both processes'."""
    (tmp / "models.toml").write_text(models_toml)
    env = {**stack_env(cache_dir), "IMAGEGEN_MODELS_FILE": str(tmp / "models.toml"), "IMAGEGEN_MODEL": "circles", **env}
    with started_stack(tmp, env, {"IMAGEGEN_WORKER_ID": "worker-circles"}) as stack:
        second_env = {"IMAGEGEN_MODEL": "squares", "IMAGEGEN_WORKER_ID": "worker-squares"}
        second = Process(
            ["worker"], {**env, **second_env, "IMAGEGEN_METRICS_PORT": str(free_port())}, tmp / "worker-squares.log"
        )
        try:
            wait_until(
                lambda: all(m["workers"] for m in stack.client.get("/models").json()), 120, "both workers", interval=0.2
            )
            yield stack, second
        finally:
            second.stop()


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The worker's own pixel limit is below the API's: a job the API accepts can then fail in the worker.
    worker_env = {"IMAGEGEN_MAX_PIXELS": str(96 * 96)}
    with started_stack(tmp_path_factory.mktemp("stack"), stack_env(cache_dir), worker_env) as running:
        yield running
