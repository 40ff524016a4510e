"""The model queue's operations (core/queueing.py) on the real Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from redis import Redis
from rq.job import Job as RqJob

from core.queueing import GENERATE_TASK, model_queue, queue_depths


def test_enqueue_peek_position_and_count(redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    for job_id in ("a", "b", "c"):
        queue.enqueue(job_id, queue_ttl=60, job_timeout=60)
    queue.enqueue("retried", queue_ttl=60, job_timeout=60, at_front=True)
    assert queue.job_ids == ["retried", "a", "b", "c"]
    assert queue.peek(2) == ["retried", "a"]
    assert queue.peek(0) == []
    assert [queue.position(job_id) for job_id in ("retried", "c", "missing")] == [0, 3, None]
    assert queue.count == 4
    assert queue_depths(redis_client) == {"imagegen.tiny": 4}
    # The RQ job names the task and carries nothing else: the request lives in the job record.
    rq_job = RqJob.fetch("a", connection=redis_client, serializer=queue.rq.serializer)
    assert rq_job.func_name == GENERATE_TASK
    assert list(rq_job.args) == [] and rq_job.kwargs == {}


def test_claim_has_one_winner_and_drops_the_rq_record(redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    queue.enqueue("mate", queue_ttl=60, job_timeout=60)
    queue.enqueue("other", queue_ttl=60, job_timeout=60)
    with ThreadPoolExecutor(8) as pool:  # eight workers race for the same batch mate
        wins = list(pool.map(lambda _: model_queue(redis_client, "tiny").claim("mate"), range(8)))
    assert wins.count(True) == 1
    assert queue.job_ids == ["other"]
    assert not redis_client.exists("rq:job:mate")
    assert redis_client.exists("rq:job:other")


def test_remove_takes_a_job_out_wherever_it_is(redis_client: Redis) -> None:
    queue = model_queue(redis_client, "tiny")
    for job_id in ("a", "b", "c"):
        queue.enqueue(job_id, queue_ttl=60, job_timeout=60)
    queue.remove("b")
    queue.remove("not-there")
    assert queue.job_ids == ["a", "c"]
