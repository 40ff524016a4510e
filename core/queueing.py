"""The RQ queues: one per model, jobs carried as the request's JSON (RQ's JSON serializer, never pickle)."""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.serializers import JSONSerializer

from core import keys
from core.schemas import GenerateRequest

# The function the worker runs for each queued job, named by path so the API never imports the worker.
GENERATE_TASK = "worker.tasks.generate"


def model_queue(redis: Redis, model: str) -> Queue:
    """The RQ queue of `model`'s jobs."""
    return Queue(keys.queue_name(model), connection=redis, serializer=JSONSerializer)


def enqueue_generation(
    queue: Queue,
    job_id: str,
    request: GenerateRequest,
    *,
    queue_ttl: int,
    job_timeout: int,
    at_front: bool = False,
    pipeline: Pipeline | None = None,
) -> None:
    """Put a validated request on its model's queue under the job's own id (at the front: a retried job)."""
    queue.enqueue_call(
        GENERATE_TASK,
        args=(request.model_dump(mode="json"),),
        job_id=job_id,
        timeout=job_timeout,
        ttl=queue_ttl,
        # Our job record is the source of truth; RQ's own result is not read, so keep it briefly.
        result_ttl=60,
        failure_ttl=queue_ttl,
        at_front=at_front,
        pipeline=pipeline,
    )


def queue_position(queue: Queue, job_id: str) -> int | None:
    """Number of jobs ahead of `job_id` in its queue (0 = next), or None when it is not queued."""
    return queue.get_job_position(job_id)


def queue_depth(queue: Queue) -> int:
    """Number of jobs waiting in the queue."""
    return queue.count
