"""Shared fixtures: test settings, a real Redis on its own db index, the tiny model built once per run."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from redis import Redis

from core.jobs import JobStore
from core.settings import Settings
from tests.redis_servers import RedisProcesses, free_port
from tests.s3_server import AWS_ENV, S3Server, running_s3_server

# A real Redis; tests own this db index and flush it before and after each test that uses it.
TEST_REDIS_URL = os.environ.get("IMAGEGEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole run (the tiny model is built into it once)."""
    configured = os.environ.get("IMAGEGEN_TEST_CACHE_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("imagegen-cache")


@pytest.fixture
def settings(cache_dir: Path) -> Settings:
    """Settings for tests: the test Redis, the tiny model, a shared cache, fast progress writes."""
    return Settings(
        redis_url=TEST_REDIS_URL,
        model="tiny",
        cache_dir=cache_dir,
        heartbeat_seconds=1.0,
        warmup_steps=1,
        queue_without_workers=True,  # most API tests queue jobs with no worker running; routing has its own tests
    )


@pytest.fixture
def redis_client() -> Iterator[Redis]:
    """The real test Redis, flushed before and after the test."""
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, said plainly
        pytest.fail(f"integration tests need a Redis at {TEST_REDIS_URL}: {exc}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def store(redis_client: Redis, settings: Settings) -> JobStore:
    """A job store over the test Redis."""
    return JobStore.from_settings(redis_client, settings)


@pytest.fixture
def redis_processes(tmp_path: Path) -> Iterator[RedisProcesses]:
    """redis-server and redis-sentinel processes of the test's own, on free loopback ports; all stopped after it."""
    processes = RedisProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-protocol server (moto's) on a free loopback port, for the whole run."""
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_settings(settings: Settings, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test settings with images in a fresh bucket of the test S3 server (credentials in the environment, where
    boto3's own chain finds them)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return settings.model_copy(
        update={"result_store": f"s3://{s3_server.new_bucket()}/results", "s3_endpoint_url": s3_server.endpoint_url}
    )


@contextmanager
def api_server(settings: Settings) -> Iterator[str]:
    """A real API server of `settings` on a free loopback port, in a thread of this process (for clients that need a
    URL, not a TestClient); its base URL, and it stops afterwards."""
    from service.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
