"""Where a queued job stands: its position in its model's queue and the predicted wait, from live data."""

from __future__ import annotations

from redis import Redis
from rq.registry import StartedJobRegistry

from core.eta import estimate_queue_eta, job_work
from core.jobs import JobStore
from core.queueing import model_queue, queue_position
from core.schemas import Job
from core.speed import unit_seconds
from core.workers import live_workers

# Jobs ahead read for an ETA; beyond this the rest are assumed to be like the ones read.
MAX_AHEAD_READ = 1000


def with_queue_view(job: Job, redis: Redis, store: JobStore) -> Job:
    """The queued `job` with `queue_position`, `start_eta_seconds` and `eta_seconds` filled in where known."""
    queue = model_queue(redis, job.model)
    position = queue_position(queue, job.id)
    if position is None:  # dequeued a moment ago: about to be marked running
        return job
    ahead_ids = [i.decode() for i in redis.lrange(queue.key, 0, min(position, MAX_AHEAD_READ) - 1)] if position else []
    ahead = store.work_left(ahead_ids)
    if ahead and position > len(ahead):
        ahead = ahead + [sum(ahead) / len(ahead)] * (position - len(ahead))
    running = store.work_left(StartedJobRegistry(queue.name, connection=redis).get_job_ids())
    workers = sum(1 for worker in live_workers(redis) if worker.model == job.model)
    eta = estimate_queue_eta(ahead, running, job_work(job.request), unit_seconds(redis, job.model), workers)
    update: dict[str, object] = {"queue_position": position}
    if eta is not None:
        update["start_eta_seconds"], update["eta_seconds"] = round(eta[0], 3), round(eta[1], 3)
    return job.model_copy(update=update)
