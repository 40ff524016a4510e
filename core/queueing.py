"""The model queues, and the one module that operates on them: enqueue, peek, claim, remove, position, depth.

One RQ queue per model (RQ's JSON serializer, never pickle). An RQ job carries nothing but the imagegen job id, which
is also its RQ id: the request lives once, in the job record (`core.jobs`), and the worker reads it from there. No
other module spells a list operation on a queue; they call a `JobQueue`.
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.serializers import JSONSerializer

from core import keys

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

    def claim(self, job_id: str) -> bool:
        """Take one queued job off the queue to run it as a batch mate; True for the one caller that removed it (the
        removal is the claim, so two workers never both run it). RQ never runs a claimed job, so its RQ record goes."""
        if self.redis.lrem(self.key, 1, job_id) != 1:
            return False
        self.redis.delete(self.rq.job_class.key_for(job_id))
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


def queue_depths(redis: Redis) -> dict[str, int]:
    """Jobs waiting in each imagegen queue, by RQ queue name (`imagegen.<model>`)."""
    return {
        queue.name: queue.count
        for queue in Queue.all(connection=redis, serializer=JSONSerializer)
        if queue.name.startswith(keys.queue_name(""))
    }
