"""A real API and worker (tiny model) on free ports, shared by the tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import TEST_REDIS_URL
from tests.e2e.processes import Stack


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
    }


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis = Redis.from_url(TEST_REDIS_URL)
    redis.flushdb()
    # The worker's own pixel limit is below the API's: a job the API accepts can then fail in the worker.
    running = Stack(tmp_path_factory.mktemp("stack"), stack_env(cache_dir), {"IMAGEGEN_MAX_PIXELS": str(96 * 96)})
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        redis.flushdb()
        redis.close()
