"""Polling a queued job (`GET /jobs/{id}`, service/queue_view.py): the position is read live on every poll, the rest of
the ETA (work ahead, workers, speed) from a per-process state at most `QUEUE_STATE_SECONDS` old."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from core.settings import Settings
from core.speed import record_speed
from core.workers import publish_worker
from service import queue_view
from service.app import create_app
from tests.integration.test_api import _worker

BODY = {"prompt": "x", "width": 512, "height": 512, "steps": 10}  # 10 units of work each


class Clock:
    """A monotonic clock the test moves by hand."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(queue_view.time, "monotonic", fake)
    return fake


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"reaper_seconds": 0}))) as api:
        yield api


def test_position_is_live_and_the_rest_is_read_at_most_every_half_second(
    client: TestClient, redis_client: Redis, clock: Clock
) -> None:
    publish_worker(redis_client, _worker("w1", "tiny", []), heartbeat_seconds=5)
    record_speed(redis_client, "tiny", seconds=5.0, work=10.0)  # 0.5 s per unit: 5 s a job
    ids = [client.post("/generate", json=BODY).json()["id"] for _ in range(3)]
    job = client.get(f"/jobs/{ids[2]}").json()
    assert (job["queue_position"], job["start_eta_seconds"], job["eta_seconds"]) == (2, 10.0, 15.0)

    publish_worker(redis_client, _worker("w2", "tiny", []), heartbeat_seconds=5)  # twice the workers
    client.delete(f"/jobs/{ids[0]}")
    # Position live; the state read 0.4 s ago still counts one worker (and of the two jobs it had ahead, the one
    # still ahead now).
    clock.now += 0.4
    job = client.get(f"/jobs/{ids[2]}").json()
    assert (job["queue_position"], job["start_eta_seconds"]) == (1, 5.0)

    clock.now += 0.2  # past QUEUE_STATE_SECONDS: read again, two workers share the work ahead
    job = client.get(f"/jobs/{ids[2]}").json()
    assert (job["queue_position"], job["start_eta_seconds"], job["eta_seconds"]) == (1, 2.5, 7.5)


def test_a_job_not_in_the_state_read_is_estimated_from_the_jobs_that_were(
    client: TestClient, redis_client: Redis, clock: Clock
) -> None:
    publish_worker(redis_client, _worker("w1", "tiny", []), heartbeat_seconds=5)
    record_speed(redis_client, "tiny", seconds=5.0, work=10.0)
    first = client.post("/generate", json=BODY).json()["id"]
    assert client.get(f"/jobs/{first}").json()["start_eta_seconds"] == 0.0
    later = client.post("/generate", json=BODY).json()["id"]  # queued after the state was read
    job = client.get(f"/jobs/{later}").json()
    assert (job["queue_position"], job["start_eta_seconds"]) == (1, 5.0)  # like the job ahead: 10 units
