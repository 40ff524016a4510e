"""Lost workers and overdue jobs on the real Redis: requeue with attempts, `worker_lost`, `expired`."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis import Redis

from core import keys
from core.event_stream import read_events
from core.jobs import JobStore
from core.queueing import model_queue
from core.recovery import expire_overdue_jobs, reap_lost_jobs, sweep_if_due
from core.schemas import GenerateRequest, JobStatus, WorkerInfo
from core.workers import publish_worker


def _queue(store: JobStore, redis: Redis, job_id: str, **fields) -> None:
    request = GenerateRequest(**{"prompt": "x", "seed": 1, "width": 64, "height": 64, "steps": 3, **fields})
    store.create(job_id, "tiny", request)


def _alive(redis: Redis, worker_id: str, current_job: str | None) -> None:
    now = datetime.now(UTC)
    info = WorkerInfo(
        id=worker_id,
        model="tiny",
        source="tiny",
        samplers=[],
        device="cpu",
        dtype="float32",
        state="busy",
        current_jobs=[current_job] if current_job else [],
        started_at=now,
        heartbeat_at=now,
    )
    publish_worker(redis, info, heartbeat_seconds=5)


def _events(store: JobStore, job_id: str) -> list[str]:
    return [entry.type for entry in read_events(store.redis, job_id)]


def test_lost_job_is_requeued_at_the_front_then_fails_worker_lost(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "lost")
    _queue(store, redis_client, "behind")
    queue = model_queue(redis_client, "tiny")
    assert store.claim("lost", "ghost-1", 3)  # a worker took it, started it, and died (it never had a heartbeat record)
    assert store.get("lost").attempts == 1

    assert reap_lost_jobs(redis_client, store, max_attempts=2) == [("lost", "requeued")]
    job = store.get("lost")
    assert job.status is JobStatus.QUEUED
    assert job.worker_id is None
    assert queue.job_ids == ["lost", "behind"]  # back at the front
    assert _events(store, "lost") == ["queued", "started", "requeued"]
    assert reap_lost_jobs(redis_client, store, max_attempts=2) == []  # nothing running now

    assert store.claim("lost", "ghost-2", 3)
    assert store.get("lost").attempts == 2
    assert reap_lost_jobs(redis_client, store, max_attempts=2) == [("lost", "failed")]
    failed = store.get("lost")
    assert failed.status is JobStatus.FAILED
    assert failed.error.code == "worker_lost"
    assert "2 attempts" in failed.error.message
    assert not redis_client.sismember(keys.running_jobs_key(), "lost")
    assert _events(store, "lost")[-1] == "failed"


def test_job_of_a_live_worker_is_left_alone(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "fine")
    store.claim("fine", "w-alive", 3)
    _alive(redis_client, "w-alive", current_job=None)  # beat before it noticed: too early to tell
    redis_client.hset("imagegen:job:fine", "started_at", time.time() + 5)
    assert reap_lost_jobs(redis_client, store, max_attempts=3) == []
    redis_client.hset("imagegen:job:fine", "started_at", time.time() - 5)
    _alive(redis_client, "w-alive", current_job="fine")
    assert reap_lost_jobs(redis_client, store, max_attempts=3) == []
    assert store.get("fine").status is JobStatus.RUNNING


def test_live_worker_that_dropped_the_job_loses_it(store: JobStore, redis_client: Redis) -> None:
    # E.g. Redis went away mid-job: the worker beats again but is no longer running it.
    _queue(store, redis_client, "dropped")
    store.claim("dropped", "w-alive", 3)
    redis_client.hset("imagegen:job:dropped", "started_at", time.time() - 5)
    _alive(redis_client, "w-alive", current_job=None)
    assert reap_lost_jobs(redis_client, store, max_attempts=3) == [("dropped", "requeued")]


def test_finished_jobs_leave_the_running_set(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "done")
    store.claim("done", "w", 3)
    assert redis_client.sismember(keys.running_jobs_key(), "done")
    store.mark_succeeded("done", [b"png"])
    assert not redis_client.sismember(keys.running_jobs_key(), "done")


def test_overdue_queued_job_expires_and_leaves_the_queue(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "short", queue_ttl_seconds=1)
    _queue(store, redis_client, "long")
    assert expire_overdue_jobs(redis_client, store) == []
    assert expire_overdue_jobs(redis_client, store, now=time.time() + 2) == ["short"]
    assert store.get("short").status is JobStatus.EXPIRED
    assert store.get("long").status is JobStatus.QUEUED
    assert model_queue(redis_client, "tiny").job_ids == ["long"]
    assert _events(store, "short") == ["queued", "expired"]
    assert not store.claim("short", "w", 3)  # never runs


def test_queue_ttl_is_capped_by_the_server(store: JobStore) -> None:
    assert store.job_queue_ttl(GenerateRequest(prompt="x", queue_ttl_seconds=10)) == 10
    assert store.job_queue_ttl(GenerateRequest(prompt="x", queue_ttl_seconds=86400)) == store.queue_ttl
    assert store.job_queue_ttl(GenerateRequest(prompt="x")) == store.queue_ttl


def test_a_job_is_not_judged_lost_before_its_lease_runs_out(store: JobStore, redis_client: Redis) -> None:
    """Right after a failover the new primary may lack the worker's last beat: a job its worker has just claimed is
    left alone until its lease (three heartbeats from the claim) has run out."""
    _queue(store, redis_client, "fresh")
    assert store.claim("fresh", "w-no-record-yet", 3)
    claimed_at = store.get("fresh").timings.started_at.timestamp()
    assert reap_lost_jobs(redis_client, store, max_attempts=3, lease_seconds=3, now=claimed_at + 2) == []
    _alive(redis_client, "w-no-record-yet", current_job="fresh")  # its beat arrives: it keeps the job
    redis_client.hset("imagegen:job:fresh", "started_at", claimed_at - 5)
    assert reap_lost_jobs(redis_client, store, max_attempts=3, lease_seconds=3, now=claimed_at + 4) == []
    redis_client.delete(keys.worker_key("w-no-record-yet"))  # and if it never beats: lost once the lease ran out
    assert reap_lost_jobs(redis_client, store, max_attempts=3, lease_seconds=3, now=claimed_at + 4) == [
        ("fresh", "requeued")
    ]
    assert store.get("fresh").attempts == 1


def test_the_fleet_sweeps_once_a_beat_whichever_worker_takes_the_lock(store: JobStore, redis_client: Redis) -> None:
    _queue(store, redis_client, "lost")
    assert store.claim("lost", "ghost", 3)  # its worker died at once
    # The first worker to beat sweeps (and re-queues the job); the others' beats in the same interval do not.
    assert sweep_if_due(redis_client, store, 3, 0.0, interval_seconds=0.3, sweeper="w1")
    assert store.get("lost").status is JobStatus.QUEUED
    assert store.claim("lost", "ghost", 3)
    assert not sweep_if_due(redis_client, store, 3, 0.0, interval_seconds=0.3, sweeper="w2")
    assert store.get("lost").status is JobStatus.RUNNING  # not swept: w1 holds the beat
    assert redis_client.get(keys.sweep_lock_key()) == b"w1"
    # The lock lapses after the interval (w1 may have died): the next beat sweeps again.
    deadline = time.monotonic() + 5
    while not sweep_if_due(redis_client, store, 3, 0.0, interval_seconds=0.3, sweeper="w2"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.get("lost").status is JobStatus.QUEUED
