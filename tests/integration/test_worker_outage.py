"""The worker's engine through a Redis outage, in-process against a redis-server of the test's own (append-only):
progress goes unreported while Redis is away, the run goes on, and its result is held in memory and written when
Redis is back; a run whose job moved on meanwhile writes nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from core.jobs import JobStore
from core.queueing import model_queue
from core.recovery import reap_lost_jobs
from core.schemas import GenerateRequest, JobStatus
from core.settings import Settings
from worker.engine import GenerationEngine
from worker.health import WorkerStatus
from worker.pipeline.loading import load_model
from worker.pipeline.resident import ResidentPipeline

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


class RedisServer:
    """A redis-server on a free loopback port, append-only (fsync always), that a test can kill and restart."""

    def __init__(self, data: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data)]
        self.command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return
            except RedisError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path)
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.kill()


@pytest.fixture(scope="module")
def loaded(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))


def _engine(loaded, server: RedisServer, settings: Settings) -> GenerationEngine:
    # Short socket timeouts and no client-side retries: the engine's own handling of an outage is what is tested.
    redis = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=None)
    store = JobStore.from_settings(redis, settings)
    resident = ResidentPipeline(loaded, family="sd15", lora_dir=None)
    return GenerationEngine(resident, store, settings, "worker-outage", WorkerStatus())


def _submit_and_dequeue(engine: GenerationEngine, job_id: str, steps: int) -> None:
    request = GenerateRequest(prompt="through an outage", width=256, height=256, steps=steps, seed=4)
    engine.store.create(job_id, "tiny", request)
    job, _ = Queue.dequeue_any([model_queue(engine.store.redis, "tiny").rq], None, connection=engine.store.redis)
    assert job.id == job_id


def _wait_for_step(engine: GenerationEngine, job_id: str, step: int) -> None:
    deadline = time.monotonic() + 60
    while engine.store.get(job_id).progress.step < step:
        assert time.monotonic() < deadline, "the job did not progress"
        time.sleep(0.01)


def test_a_result_made_while_redis_was_away_is_written_when_it_is_back(loaded, server, settings) -> None:
    engine = _engine(loaded, server, settings)
    _submit_and_dequeue(engine, "held", steps=40)
    run = threading.Thread(target=engine.run, args=("held",))
    run.start()
    _wait_for_step(engine, "held", 2)
    server.kill()
    run.join(timeout=120)  # the whole run goes on without Redis: the images are made, then held
    assert not run.is_alive()
    assert engine.status.current_jobs == {"held"}  # still this worker's: its heartbeat will name it
    server.start()
    engine.drain()
    job = engine.store.get("held")
    assert job.status is JobStatus.SUCCEEDED, job
    assert job.attempts == 1
    assert engine.store.get_image("held", 0) is not None
    assert engine.status.current_jobs == set()


def test_a_run_whose_job_moved_on_writes_nothing(loaded, server, settings) -> None:
    """Redis came back and a sweep re-queued the job before the worker's heartbeat resumed: the old run's result is
    discarded (fenced by its attempt), so the job's one outcome is the next run's."""
    engine = _engine(loaded, server, settings)
    _submit_and_dequeue(engine, "moved", steps=40)
    run = threading.Thread(target=engine.run, args=("moved",))
    run.start()
    _wait_for_step(engine, "moved", 2)
    server.kill()
    server.start()
    sweeper = Redis.from_url(server.url)
    assert reap_lost_jobs(sweeper, JobStore.from_settings(sweeper, settings), max_attempts=3) == [
        ("moved", "requeued")  # no heartbeat record names it (none was ever written here)
    ]
    run.join(timeout=120)
    engine.drain()
    job = engine.store.get("moved")
    assert job.status is JobStatus.QUEUED  # waiting for its next run; the old one wrote nothing
    assert job.attempts == 1 and job.images == []
    assert engine.store.get_image("moved", 0) is None
    assert engine.status.current_jobs == set()
