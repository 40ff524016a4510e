"""The worker's engine through a Redis outage, in-process against a redis-server of the test's own (append-only):
progress goes unreported while Redis is away, the run goes on, and its result is held in memory and written when
Redis is back; a run whose job moved on meanwhile writes nothing."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from redis import Redis

from core.jobs import JobStore
from core.queueing import IdQueue, model_queue
from core.recovery import reap_lost_jobs
from core.schemas import GenerateRequest, JobStatus
from core.settings import Settings
from tests.redis_servers import RedisProcesses
from worker.engine import GenerationEngine
from worker.health import WorkerStatus
from worker.pipeline.loading import load_model
from worker.pipeline.resident import ResidentPipeline

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


@pytest.fixture
def server(redis_processes: RedisProcesses) -> int:
    """The port of a redis-server of the test's own, append-only with fsync always, that the test kills and restarts."""
    return redis_processes.server(appendfsync="always")


@pytest.fixture(scope="module")
def loaded(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))


def _engine(loaded, port: int, settings: Settings) -> GenerationEngine:
    # Short socket timeouts and no client-side retries: the engine's own handling of an outage is what is tested.
    redis = Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=None)
    store = JobStore.from_settings(redis, settings)
    resident = ResidentPipeline(loaded, family="sd15", lora_dir=None)
    return GenerationEngine(resident, store, settings, "worker-outage", WorkerStatus())


def _submit_and_dequeue(engine: GenerationEngine, job_id: str, steps: int) -> None:
    request = GenerateRequest(prompt="through an outage", width=256, height=256, steps=steps, seed=4)
    engine.store.create(job_id, "tiny", request)
    job, _ = IdQueue.dequeue_any([model_queue(engine.store.redis, "tiny").rq], None, connection=engine.store.redis)
    assert job.id == job_id


def _wait_for_step(engine: GenerationEngine, job_id: str, step: int) -> None:
    deadline = time.monotonic() + 60
    while engine.store.get(job_id).progress.step < step:
        assert time.monotonic() < deadline, "the job did not progress"
        time.sleep(0.01)


def test_a_result_made_while_redis_was_away_is_written_when_it_is_back(
    loaded, server: int, redis_processes: RedisProcesses, settings
) -> None:
    engine = _engine(loaded, server, settings)
    _submit_and_dequeue(engine, "held", steps=40)
    run = threading.Thread(target=engine.run, args=("held",))
    run.start()
    _wait_for_step(engine, "held", 2)
    redis_processes.kill(server)
    run.join(timeout=120)  # the whole run goes on without Redis: the images are made, then held
    assert not run.is_alive()
    assert engine.status.current_jobs == {"held"}  # still this worker's: its heartbeat will name it
    redis_processes.restart(server)
    engine.drain()
    job = engine.store.get("held")
    assert job.status is JobStatus.SUCCEEDED, job
    assert job.attempts == 1
    assert engine.store.get_image("held", 0) is not None
    assert engine.status.current_jobs == set()


def test_a_run_whose_job_moved_on_writes_nothing(
    loaded, server: int, redis_processes: RedisProcesses, settings
) -> None:
    """Redis came back and a sweep re-queued the job before the worker's heartbeat resumed: the old run's result is
    discarded (fenced by its attempt), so the job's one outcome is the next run's."""
    engine = _engine(loaded, server, settings)
    _submit_and_dequeue(engine, "moved", steps=40)
    run = threading.Thread(target=engine.run, args=("moved",))
    run.start()
    _wait_for_step(engine, "moved", 2)
    redis_processes.kill(server)
    redis_processes.restart(server)
    sweeper = Redis(port=server)
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
