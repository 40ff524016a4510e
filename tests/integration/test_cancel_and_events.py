"""Cancel semantics and job event streams on the real Redis."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from redis import Redis

from core import keys
from core.event_stream import read_events
from core.jobs import CancelOutcome, JobStore, StepSignal
from core.queueing import IdQueue, model_queue
from core.schemas import GenerateRequest, JobStatus
from core.settings import Settings
from core.speed import record_speed
from service.app import create_app
from worker.pipeline.families import FAMILY_ADAPTERS
from worker.pipeline.previews import preview_event
from worker.step_reporter import StepReporter


def _sd15_preview(latents: torch.Tensor, step: int):
    return preview_event(latents, FAMILY_ADAPTERS["sd15"].latent_rgb, step)


def _queue(store: JobStore, redis: Redis, job_id: str, **fields) -> GenerateRequest:
    request = GenerateRequest(**{"prompt": "x", "seed": 1, "width": 512, "height": 512, "steps": 10, **fields})
    store.create(job_id, "tiny", request)
    return request


def _event_types(store: JobStore, job_id: str) -> list[str]:
    return [entry.type for entry in read_events(store.redis, job_id)]


def test_cancel_queued_leaves_the_queue_and_never_starts(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "a")
    _queue(store, redis_client, "b")
    _queue(store, redis_client, "c")
    IdQueue.dequeue_any([model_queue(redis_client, "tiny").rq], None, connection=redis_client)  # a worker takes "a"
    assert store.cancel("a") is CancelOutcome.CANCELED  # ... and a cancel comes before its claim
    assert store.cancel("c") is CancelOutcome.CANCELED
    assert model_queue(redis_client, "tiny").job_ids == ["b"]
    assert store.get("a").status is JobStatus.CANCELED
    claim = store.claim("a", "w", 10, dequeued=True)
    assert not claim and claim.outcome == "canceled"  # the worker that dequeued it must not run it
    assert store.get("a").status is JobStatus.CANCELED
    assert store.get("a").timings.started_at is None
    assert _event_types(store, "a") == ["queued", "canceled"]
    assert store.get("b").status is JobStatus.QUEUED
    for key in (keys.job_key("a"), keys.job_events_key("a")):
        assert 0 < redis_client.ttl(key) <= store.result_ttl


def test_cancel_running_is_requested_and_seen_at_the_next_step(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "run")
    _queue(store, redis_client, "other")
    assert store.claim("run", "w", 10)
    assert store.claim("other", "w2", 10)
    assert store.cancel("run") is CancelOutcome.REQUESTED
    assert store.get("run").status is JobStatus.RUNNING
    assert store.get("run").cancel_requested
    assert store.report_step("run", 3, 10, 1.0, event=None) is StepSignal.CANCEL
    assert store.report_step("other", 3, 10, 1.0, event=None) is StepSignal.GO  # another job is untouched
    assert store.mark_canceled("run", step=3)
    assert store.get("run").status is JobStatus.CANCELED
    assert store.mark_succeeded("run", [b"late"]) is False  # a finished job stays as it ended
    assert store.get("run").status is JobStatus.CANCELED
    assert _event_types(store, "run") == ["queued", "started", "canceled"]


def test_finished_job_cannot_be_canceled(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "done")
    store.claim("done", "w", 10)
    store.mark_succeeded("done", [b"img"])
    assert store.cancel("done") is CancelOutcome.FINISHED
    assert store.get("done").status is JobStatus.SUCCEEDED
    assert store.cancel("ghost") is CancelOutcome.UNKNOWN


def test_step_reporter_coalesces_and_keeps_the_last_step(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "slow-rate")
    attempt = store.claim("slow-rate", "w", 20).attempt
    reporter = StepReporter(
        store, "slow-rate", attempt=attempt, events_per_second=1e-6, preview_every=0, preview=_sd15_preview
    )
    for step in range(1, 21):
        assert reporter(step, 20, torch.zeros(1, 4, 8, 8)) is StepSignal.GO
    steps = [json.loads(e.data)["step"] for e in read_events(store.redis, "slow-rate") if e.type == "step"]
    assert steps == [1, 20]
    assert store.get("slow-rate").progress.step == 20

    _queue(store, redis_client, "fast-rate")
    attempt = store.claim("fast-rate", "w", 20).attempt
    reporter = StepReporter(
        store, "fast-rate", attempt=attempt, events_per_second=1e9, preview_every=5, preview=_sd15_preview
    )
    for step in range(1, 21):
        reporter(step, 20, torch.randn(1, 4, 8, 8))
    events = read_events(store.redis, "fast-rate")
    steps = [json.loads(e.data)["step"] for e in events if e.type == "step"]
    assert steps == list(range(1, 21))
    previews = [json.loads(e.data)["step"] for e in events if e.type == "preview"]
    assert previews == [5, 10, 15, 20]
    last = json.loads(events[-1].data)
    assert last["eta_seconds"] == 0.0
    assert last["elapsed_seconds"] >= last["step_seconds"] >= 0


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_delete_answers_by_state(client: TestClient, store: JobStore, redis_client: Redis) -> None:
    queued = client.post("/generate", json={"prompt": "x", "width": 64, "height": 64}).json()["id"]
    response = client.delete(f"/jobs/{queued}")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert client.delete(f"/jobs/{queued}").status_code == 409

    running = client.post("/generate", json={"prompt": "x", "width": 64, "height": 64}).json()["id"]
    store.claim(running, "w", 25)
    response = client.delete(f"/jobs/{running}")
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True

    response = client.delete("/jobs/0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_queue_position_and_eta(client: TestClient, redis_client: Redis) -> None:
    from core.workers import publish_worker
    from tests.integration.test_api import _worker

    body = {"prompt": "x", "width": 512, "height": 512, "steps": 10}
    ids = [client.post("/generate", json=body).json()["id"] for _ in range(3)]
    job = client.get(f"/jobs/{ids[2]}").json()
    assert job["queue_position"] == 2
    assert job["eta_seconds"] is None  # no measured speed and no worker yet

    publish_worker(redis_client, _worker("w1", "tiny", []), heartbeat_seconds=5)
    record_speed(redis_client, "tiny", seconds=5.0, work=10.0)  # 0.5 s per unit; each job here is 10 units
    job = client.get(f"/jobs/{ids[2]}").json()
    assert job["start_eta_seconds"] == 10.0
    assert job["eta_seconds"] == 15.0
    publish_worker(redis_client, _worker("w2", "tiny", []), heartbeat_seconds=5)
    assert client.get(f"/jobs/{ids[2]}").json()["start_eta_seconds"] == 5.0

    client.delete(f"/jobs/{ids[0]}")
    assert client.get(f"/jobs/{ids[2]}").json()["queue_position"] == 1
