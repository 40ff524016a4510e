"""Where a job stands in its model's queue, and the predicted wait, from live data in Redis."""

from __future__ import annotations

from redis import Redis

from core.eta import estimate_queue_eta, job_work
from core.jobs import JobStore
from core.queueing import model_queue
from core.schemas import GenerateRequest, Job
from core.speed import unit_seconds
from core.workers import live_workers

# Jobs ahead read for an ETA; beyond this the rest are assumed to be like the ones read.
MAX_AHEAD_READ = 1000


def predict_wait(
    redis: Redis, store: JobStore, model: str, request: GenerateRequest, position: int
) -> tuple[float, float] | None:
    """(seconds until start, seconds until done) of a job with `position` jobs ahead of it, or None if unknown."""
    ahead = store.work_left(model_queue(redis, model).peek(min(position, MAX_AHEAD_READ)))
    if ahead and position > len(ahead):
        ahead = ahead + [sum(ahead) / len(ahead)] * (position - len(ahead))
    # Our own set of running jobs (batch mates a worker claimed never pass through RQ's started registry).
    running = store.work_left(store.running_jobs(model))
    workers = sum(1 for worker in live_workers(redis) if worker.model == model)
    return estimate_queue_eta(ahead, running, job_work(request), unit_seconds(redis, model), workers)


def with_queue_view(job: Job, redis: Redis, store: JobStore) -> Job:
    """The queued `job` with `queue_position`, `start_eta_seconds` and `eta_seconds` filled in where known."""
    position = model_queue(redis, job.model).position(job.id)
    if position is None:  # a worker took it off the queue a moment ago and is about to mark it running: it is next
        position = 0
    update: dict[str, object] = {"queue_position": position}
    eta = predict_wait(redis, store, job.model, job.request, position)
    if eta is not None:
        update["start_eta_seconds"], update["eta_seconds"] = round(eta[0], 3), round(eta[1], 3)
    return job.model_copy(update=update)
