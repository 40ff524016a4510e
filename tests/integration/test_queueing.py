"""The model queue's operations (core/queueing.py) on the real Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from redis import Redis
from rq import Queue

from core.jobs import JobStore
from core.queueing import JobQueue, model_queue, queue_depths
from core.recovery import give_back_stranded_jobs
from core.schemas import GenerateRequest, JobStatus


def test_enqueue_peek_position_and_count(redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    for job_id in ("a", "b", "c"):
        queue.enqueue(job_id)
    queue.enqueue("retried", at_front=True)
    assert queue.job_ids == ["retried", "a", "b", "c"]
    assert queue.peek(2) == ["retried", "a"]
    assert queue.peek(0) == []
    assert [queue.position(job_id) for job_id in ("retried", "c", "missing")] == [0, 3, None]
    assert queue.count == 4
    assert queue_depths(redis_client) == {"imagegen.tiny": 4}
    # The list carries the bare id, with no RQ job hash: the request lives in the job record. RQ still lists the queue.
    assert not redis_client.exists("rq:job:a")
    assert [listed.name for listed in Queue.all(connection=redis_client)] == ["imagegen.tiny"]


def test_claim_has_one_winner(store: JobStore, redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    for job_id in ("mate", "other"):
        store.create(job_id, "tiny", GenerateRequest(prompt="x", seed=1))
    with ThreadPoolExecutor(8) as pool:  # eight workers race for the same batch mate
        claims = list(pool.map(lambda n: store.claim("mate", f"w{n}", 3), range(8)))
    assert [bool(c) for c in claims].count(True) == 1
    assert {c.outcome for c in claims if not c} == {"gone"}
    assert queue.job_ids == ["other"]
    assert store.get("mate").status is JobStatus.RUNNING and store.get("mate").attempts == 1


def _dequeue(queue: JobQueue) -> str:
    """RQ's own dequeue, as the worker's queue loop runs it: the head moves to RQ's intermediate list."""
    job, _ = queue.rq.dequeue_any([queue.rq], None, connection=queue.redis)
    return job.id


def test_a_dequeued_job_is_claimed_off_the_intermediate_list(store: JobStore, redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    store.create("head", "tiny", GenerateRequest(prompt="x", seed=1))
    assert _dequeue(queue) == "head"
    assert queue.job_ids == [] and queue.dequeued_ids == ["head"]
    assert not store.claim("head", "w", 3)  # not on the queue any more: only a claim from the intermediate list works
    claim = store.claim("head", "w", 3, dequeued=True)
    assert claim.attempt == 1
    assert queue.dequeued_ids == []
    assert not store.claim("head", "w2", 3, dequeued=True)


def test_a_dequeued_job_nobody_claims_goes_back_to_the_front(store: JobStore, redis_client: Redis) -> None:
    """The worker died (or lost Redis) between RQ's move and its claim: at any such instant the job is still in a
    list, and the sweep gives it back once it has sat there `stranded_seconds`."""
    queue = model_queue(redis_client, "tiny")
    for job_id in ("stranded", "claimed", "canceled", "behind"):
        store.create(job_id, "tiny", GenerateRequest(prompt="x", seed=1))
    for _ in range(3):
        _dequeue(queue)
    assert queue.dequeued_ids == ["stranded", "claimed", "canceled"]
    assert store.claim("claimed", "w", 3, dequeued=True)
    store.cancel("canceled")
    now = time.time()
    assert give_back_stranded_jobs(redis_client, store, stranded_seconds=10, now=now) == []  # first seen
    assert queue.dequeued_ids == ["stranded"]  # the canceled job's id is forgotten
    assert give_back_stranded_jobs(redis_client, store, stranded_seconds=10, now=now + 5) == []  # not yet
    assert give_back_stranded_jobs(redis_client, store, stranded_seconds=10, now=now + 11) == ["stranded"]
    assert queue.job_ids == ["stranded", "behind"] and queue.dequeued_ids == []
    assert store.get("stranded").status is JobStatus.QUEUED
    # It runs like any queued job: RQ's record was made anew.
    assert _dequeue(queue) == "stranded"
    assert store.claim("stranded", "w", 3, dequeued=True).attempt == 1


def test_a_late_claim_loses_to_the_sweep_that_gave_the_job_back(store: JobStore, redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    store.create("slow", "tiny", GenerateRequest(prompt="x", seed=1))
    _dequeue(queue)
    now = time.time()
    give_back_stranded_jobs(redis_client, store, stranded_seconds=1, now=now)
    assert give_back_stranded_jobs(redis_client, store, stranded_seconds=1, now=now + 2) == ["slow"]
    assert not store.claim("slow", "w-cut-off", 3, dequeued=True)  # its worker comes back too late: refused
    assert queue.job_ids == ["slow"]


def test_remove_takes_a_job_out_wherever_it_is(redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    for job_id in ("a", "b", "c"):
        queue.enqueue(job_id)
    queue.remove("b")
    queue.remove("not-there")
    assert queue.job_ids == ["a", "c"]
