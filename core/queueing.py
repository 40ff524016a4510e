"""The model queues, and the one module that operates on them: enqueue, peek, position, depth, remove, and the lists a
claim takes a job from.

One RQ queue per model (RQ's JSON serializer, never pickle). An RQ job carries nothing but the imagegen job id, which
is also its RQ id: the request lives once, in the job record (`core.jobs`), and the worker reads it from there. No
other module spells a list operation on a queue; they call a `JobQueue`.

A job's way through the lists: `JobStore.create` pushes it on the queue in the transaction that writes its record. A
worker's RQ loop moves it (BLMOVE) to RQ's intermediate list of the queue; the worker then claims it
(`JobStore.claim`: one script takes it off that list and starts it under the worker's lease). A batch mate is claimed
straight off the queue the same way. A job left in the intermediate list (its worker died or lost Redis between the
move and the claim) is given back to the front of the queue by the recovery sweep (`core/recovery.py`).
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.serializers import JSONSerializer

from core import keys
from core.schemas import JobStatus

# The function the worker runs for each queued job, named by path so the API never imports the worker.
GENERATE_TASK = "worker.tasks.generate"


class JobQueue:
    """The queue of one model's jobs."""

    def __init__(self, redis: Redis, model: str) -> None:
        self.redis = redis
        self.model = model
        self.rq = Queue(keys.queue_name(model), connection=redis, serializer=JSONSerializer)

    @property
    def key(self) -> str:
        """The Redis list RQ keeps the queued ids in (what KEDA and the worker's RQ loop watch)."""
        return str(self.rq.key)

    def enqueue(
        self,
        job_id: str,
        *,
        queue_ttl: int,
        job_timeout: int,
        at_front: bool = False,
        pipeline: Pipeline | None = None,
    ) -> None:
        """Queue the job (at the front: a retried job). RQ's job carries only the id; the request stays in the job
        record."""
        self.rq.enqueue_call(
            GENERATE_TASK,
            job_id=job_id,
            timeout=job_timeout,
            ttl=queue_ttl,
            # Our job record is the source of truth; RQ's own result is not read, so keep it briefly.
            result_ttl=60,
            failure_ttl=queue_ttl,
            at_front=at_front,
            pipeline=pipeline,
        )

    def peek(self, count: int) -> list[str]:
        """Ids of the first `count` queued jobs, head first, without taking them."""
        if count <= 0:
            return []
        return [raw.decode() for raw in self.redis.lrange(self.key, 0, count - 1)]

    @property
    def job_ids(self) -> list[str]:
        """Ids of every queued job, head first."""
        return [raw.decode() for raw in self.redis.lrange(self.key, 0, -1)]

    @property
    def intermediate_key(self) -> str:
        """RQ's intermediate list of this queue: where a worker's queue loop moves a job before the worker claims it."""
        return str(self.rq.intermediate_queue_key)

    def rq_job_key(self, job_id: str) -> str:
        """RQ's own record of a queued job (function name and id); a claim deletes it."""
        return str(self.rq.job_class.key_for(job_id))

    @property
    def dequeued_ids(self) -> list[str]:
        """Ids moved off the queue by a worker's loop and not claimed yet (normally for a few milliseconds)."""
        return [raw.decode() for raw in self.redis.lrange(self.intermediate_key, 0, -1)]

    def drop_dequeued(self, job_id: str) -> None:
        """Forget an id in the intermediate list whose job is not queued (it ended, or its record is gone); nothing
        when the job is queued again by then (re-queued and dequeued anew: that id is live)."""
        job_key = keys.job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key)
                if pipe.hget(job_key, "status") == JobStatus.QUEUED.value.encode():
                    return
                pipe.multi()
                pipe.lrem(self.intermediate_key, 0, job_id)
                pipe.execute()
            except WatchError:
                pass

    def give_back(self, job_id: str, *, queue_ttl: int, job_timeout: int) -> bool:
        """Put a dequeued, never claimed job back at the front of the queue (with a fresh RQ record); False when it
        was claimed, ended or given back meanwhile. One transaction watching the job and the list."""
        job_key = keys.job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key, self.intermediate_key)
                queued = pipe.hget(job_key, "status") == JobStatus.QUEUED.value.encode()
                if not queued or pipe.lpos(self.intermediate_key, job_id) is None:
                    return False
                pipe.multi()
                pipe.lrem(self.intermediate_key, 1, job_id)
                pipe.hdel(job_key, "stranded_since")
                self.enqueue(job_id, queue_ttl=queue_ttl, job_timeout=job_timeout, at_front=True, pipeline=pipe)
                pipe.execute()
            except WatchError:
                return False
        return True

    def remove(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        """Take a job out of the queue (canceled or expired while queued); nothing when it is not there."""
        (pipeline if pipeline is not None else self.redis).lrem(self.key, 0, job_id)

    def position(self, job_id: str) -> int | None:
        """Number of jobs ahead of `job_id` (0 = next), or None when it is not queued."""
        return self.rq.get_job_position(job_id)

    @property
    def count(self) -> int:
        """Number of jobs waiting."""
        return int(self.redis.llen(self.key))


def model_queue(redis: Redis, model: str) -> JobQueue:
    """The queue of `model`'s jobs."""
    return JobQueue(redis, model)


def model_queues(redis: Redis) -> list[JobQueue]:
    """Every model queue RQ knows of (one was created by a first submission to the model)."""
    prefix = keys.queue_name("")
    return [
        JobQueue(redis, queue.name.removeprefix(prefix))
        for queue in Queue.all(connection=redis, serializer=JSONSerializer)
        if queue.name.startswith(prefix)
    ]


def queue_depths(redis: Redis) -> dict[str, int]:
    """Jobs waiting in each imagegen queue, by RQ queue name (`imagegen.<model>`)."""
    return {queue.rq.name: queue.count for queue in model_queues(redis)}
