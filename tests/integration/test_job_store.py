"""Job records on the real Redis: transitions, and a TTL on every key written."""

from __future__ import annotations

from redis import Redis

from core import keys
from core.event_stream import read_events
from core.jobs import JobStore, StepSignal
from core.schemas import GenerateRequest, JobStatus

# Shared indexes without a TTL: their members leave with their jobs (status scripts, the recovery sweep, a claim),
# the webhook delivery stream and its retry set are drained by the deliverer, and RQ's queue list and registry of
# queues hold ids and names only. The listing indexes (`GET /jobs`) are trimmed by age at every submission, expire
# when none comes, and lose an expired job's id when a listing meets it (tests/integration/test_job_listing.py).
INDEXES = {
    keys.all_jobs_key(),
    "rq:queue:imagegen.tiny",
    "rq:queues",
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

    assert store.claim("job1", "worker-a", total_steps=10)
    running = store.get("job1")
    assert running.status is JobStatus.RUNNING
    assert running.worker_id == "worker-a"
    assert running.timings.started_at is not None
    assert running.timings.started_at >= running.timings.created_at

    assert store.report_step("job1", 4, 10, eta_seconds=1.5, event=None) is StepSignal.GO
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
    attempt = store.claim("job2", "w", 3).attempt
    assert not store.mark_failed("job2", "w", "out_of_memory", "CUDA out of memory", attempt=2)  # not its run
    assert store.mark_failed("job2", "w", "out_of_memory", "CUDA out of memory", attempt=attempt)
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


def test_a_stale_run_can_no_longer_write(redis_client: Redis, store: JobStore) -> None:
    """Attempt 1 lost its job (re-queued while its worker was cut off) and attempt 2 runs it: every write of attempt
    1 is refused, images included, so the job's one outcome is attempt 2's."""
    store.create("job3", "tiny", GenerateRequest(prompt="x", seed=1, steps=4))
    first = store.claim("job3", "w1", 4).attempt
    assert store.requeue("job3", "w1", 2, "worker w1 was lost")
    second = store.claim("job3", "w2", 4).attempt
    assert (first, second) == (1, 2)

    assert store.report_step("job3", 3, 4, 0.1, event=None, attempt=first) is StepSignal.LOST
    assert store.report_step("job3", 1, 4, 0.1, event=None, attempt=second) is StepSignal.GO
    assert not store.mark_succeeded("job3", [b"stale"], attempt=first)
    assert not store.mark_canceled("job3", 3, attempt=first)
    assert not store.mark_failed("job3", "w1", "internal", "late", attempt=first)
    assert store.get_image("job3", 0) is None
    assert store.get("job3").progress.step == 1

    assert store.mark_succeeded("job3", [b"fresh"], attempt=second)
    assert store.mark_succeeded("job3", [b"again"], attempt=second)  # its retry: done already, nothing rewritten
    assert not store.mark_succeeded("job3", [b"other"])  # anyone else: refused
    assert store.get_image("job3", 0) == b"fresh"
    events = [entry.type for entry in read_events(redis_client, "job3")]
    assert events.count("succeeded") == 1 and events.count("started") == 2


def test_ttls_are_set_at_creation_after_a_requeue_and_at_the_end(redis_client: Redis, store: JobStore) -> None:
    store.create("ttl", "tiny", GenerateRequest(prompt="x", seed=1))
    job_key, events_key = keys.job_key("ttl"), keys.job_events_key("ttl")
    created = store.queue_ttl + store.job_timeout + store.result_ttl
    running = store.job_timeout + store.result_ttl
    assert created - 5 < redis_client.ttl(job_key) <= created and redis_client.ttl(events_key) <= created
    first = store.claim("ttl", "w1", 3)
    assert first.attempt == 1 and redis_client.hget(job_key, "batch_size") is None
    assert redis_client.ttl(job_key) > running  # a first claim keeps the creation's TTL: it covers the run
    assert store.requeue("ttl", "w1", 2, "worker lost")
    assert store.claim("ttl", "w2", 3, batch_size=1).attempt == 2
    assert running - 5 < redis_client.ttl(job_key) <= running and redis_client.ttl(events_key) <= running
    assert store.get("ttl").batch_size == 1  # recorded with the claim
    assert store.mark_succeeded("ttl", [b"png"], attempt=2)
    assert redis_client.ttl(job_key) <= store.result_ttl and redis_client.ttl(events_key) <= store.result_ttl
