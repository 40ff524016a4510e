"""The model queues, and the one module that operates on them: enqueue, peek, position, depth, remove, and the lists a
claim takes a job from.

One RQ queue per model. Its list carries nothing but imagegen job ids, with no RQ job hash beside them (one write and
one read fewer a job than RQ's enqueue and dequeue, and no second copy to keep in step): the request and its deadlines
live once, in the job record (`core.jobs`), and the worker reads them from there. RQ's lists, its set of queues and
its worker loop (BLMOVE into the intermediate list) stay. No other module spells a list operation on a queue; they
call a `JobQueue`.

A job's way through the lists: `JobStore.create` pushes it on the queue in the transaction that writes its record. A
worker's RQ loop moves it (BLMOVE) to RQ's intermediate list of the queue; the worker then claims it
(`JobStore.claim`: one script takes it off that list and starts it under the worker's lease). A batch mate is claimed
straight off the queue the same way. A job left in the intermediate list (its worker died or lost Redis between the
move and the claim) is given back to the front of the queue by the recovery sweep (`core/recovery.py`).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from core import keys
from core.schemas import JobStatus


class IdQueue(Queue):
    """An RQ queue whose list holds bare imagegen job ids: what its worker loop dequeues is an in-memory RQ job of that
    id (RQ would fetch a job hash, a read a job, and drop an id without one)."""

    @classmethod
    def _fetch_dequeued_job(
        cls,
        connection: Redis,
        queue_key: str,
        job_id: str,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queue = cls.from_queue_key(queue_key, connection=connection, serializer=serializer)
        return Job(job_id, connection=connection, serializer=serializer), queue


class JobQueue:
    """The queue of one model's jobs."""

    def __init__(self, redis: Redis, model: str) -> None:
        self.redis = redis
        self.model = model
        self.rq = IdQueue(keys.queue_name(model), connection=redis, serializer=JSONSerializer)

    @property
    def key(self) -> str:
        """The Redis list RQ keeps the queued ids in (what KEDA and the worker's RQ loop watch)."""
        return str(self.rq.key)

    def enqueue(self, job_id: str, *, at_front: bool = False, pipeline: Pipeline | AsyncPipeline | None = None) -> None:
        """Queue the job (at the front: a retried job): its id on RQ's list, and the queue in RQ's set of queues. No
        RQ job hash: the request and every deadline live in the job record (`core.jobs`), and `IdQueue` hands the
        worker's RQ loop the bare id."""
        target = pipeline if pipeline is not None else self.redis.pipeline(transaction=False)
        target.sadd(self.rq.redis_queues_keys, self.key)
        (target.lpush if at_front else target.rpush)(self.key, job_id)
        if pipeline is None:
            target.execute()

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

    def give_back(self, job_id: str) -> bool:
        """Put a dequeued, never claimed job back at the front of the queue; False when it
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
                self.enqueue(job_id, at_front=True, pipeline=pipe)
                pipe.execute()
            except WatchError:
                return False
        return True

    def remove(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        """Take a job out of the queue (canceled or expired while queued); nothing when it is not there."""
        (pipeline if pipeline is not None else self.redis).lrem(self.key, 0, job_id)

    def position(self, job_id: str) -> int | None:
        """Number of jobs ahead of `job_id` (0 = next), or None when it is not queued."""
        position = self.redis.lpos(self.key, job_id)  # RQ's own asks the server's version (INFO) every time
        return None if position is None else int(position)

    @property
    def count(self) -> int:
        """Number of jobs waiting."""
        return int(self.redis.llen(self.key))


def queue_list_key(model: str) -> str:
    """The Redis list of `model`'s queue (RQ's key for its name), for a reader on another client (the API's async one);
    the same as `JobQueue.key`."""
    return f"{Queue.redis_queue_namespace_prefix}{keys.queue_name(model)}"


# The API's async reads of a queue (polls: `service/queue_view.py`; submissions: `service/submission.py`), kept here
# with the sync `JobQueue`'s.


async def queued_position(redis: AsyncRedis, model: str, job_id: str) -> int | None:
    """`JobQueue.position` on an asyncio client: jobs ahead of `job_id` (0 = next), None when it is not queued."""
    position = await redis.lpos(queue_list_key(model), job_id)
    return None if position is None else int(position)


async def queued_count(redis: AsyncRedis, model: str) -> int:
    """`JobQueue.count` on an asyncio client: the number of `model`'s jobs waiting (the API's submissions)."""
    return int(await redis.llen(queue_list_key(model)))


def peek_into(pipeline: AsyncPipeline, model: str, count: int) -> None:
    """Add to an asyncio pipeline the read of the first `count` ids of `model`'s queue (its reply: a list of bytes)."""
    pipeline.lrange(queue_list_key(model), 0, count - 1)


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
