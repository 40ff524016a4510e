"""Job records on the real Redis: transitions, and a TTL on every key written."""

from __future__ import annotations

from redis import Redis

from core import keys
from core.jobs import JobStore
from core.schemas import GenerateRequest, JobStatus

# Shared indexes without a TTL: their members leave with their jobs (status scripts, the recovery sweep), and the
# webhook delivery stream and its retry set are drained by the deliverer.
INDEXES = {
    keys.running_jobs_key(),
    keys.queue_deadlines_key(),
    keys.webhook_deliveries_key(),
    keys.webhook_retries_key(),
}


def _all_keys(redis: Redis) -> list[str]:
    """Every key but the shared indexes."""
    return sorted(key.decode() for key in redis.keys("*") if key.decode() not in INDEXES)


def _assert_every_key_expires(redis: Redis, at_most: int) -> None:
    for key in _all_keys(redis):
        ttl = redis.ttl(key)
        assert 0 < ttl <= at_most, f"{key} has TTL {ttl}"


def test_record_transitions_queued_running_succeeded(redis_client: Redis, store: JobStore) -> None:
    request = GenerateRequest(prompt="a cat", seed=5, steps=10, num_images=2)
    created = store.create("job1", "tiny", request)
    assert created.status is JobStatus.QUEUED
    assert store.get("job1") == created
    _assert_every_key_expires(redis_client, store.queue_ttl + store.job_timeout + store.result_ttl)

    assert store.start("job1", "worker-a", total_steps=10)
    running = store.get("job1")
    assert running.status is JobStatus.RUNNING
    assert running.worker_id == "worker-a"
    assert running.timings.started_at is not None
    assert running.timings.started_at >= running.timings.created_at

    assert store.report_step("job1", 4, 10, eta_seconds=1.5, event=None) is False
    assert store.get("job1").progress.fraction == 0.4
    assert store.get("job1").eta_seconds == 1.5

    assert store.mark_succeeded("job1", [b"first", b"second"])
    done = store.get("job1")
    assert done.status is JobStatus.SUCCEEDED
    assert done.images == ["/jobs/job1/images/0", "/jobs/job1/images/1"]
    assert done.timings.finished_at >= done.timings.started_at
    assert store.get_image("job1", 1) == b"second"
    assert store.get_image("job1", 2) is None
    assert _all_keys(redis_client) == [
        keys.job_key("job1"),
        keys.job_events_key("job1"),
        keys.job_image_key("job1", 0),
        keys.job_image_key("job1", 1),
    ]
    _assert_every_key_expires(redis_client, store.result_ttl)


def test_failed_record_keeps_code_and_message(redis_client: Redis, store: JobStore) -> None:
    store.create("job2", "tiny", GenerateRequest(prompt="x", seed=1))
    store.mark_failed("job2", "w", "out_of_memory", "CUDA out of memory")
    failed = store.get("job2")
    assert failed.status is JobStatus.FAILED
    assert failed.error.code == "out_of_memory"
    assert failed.error.message == "CUDA out of memory"
    assert failed.images == []
    assert failed.worker_id == "w"
    _assert_every_key_expires(redis_client, store.result_ttl)


def test_unknown_job_is_none(store: JobStore) -> None:
    assert store.get("nope") is None
    assert store.get_image("nope", 0) is None
