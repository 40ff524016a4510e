"""Where a job stands in its model's queue, and the predicted wait, from live data in Redis."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.eta import estimate_queue_eta, job_work
from core.jobs import JobStore
from core.queueing import model_queue, peek_into, queued_position
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


# What a poll of a queued job needs beside its own position (the work queued ahead, what running jobs have left, the
# live workers, the speed) changes slower than clients poll: each API process reads it at most this often per model.
QUEUE_STATE_SECONDS = 0.5
# A queued job's work never changes: remembered by id, for this many jobs.
_WORK_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class QueueState:
    """A model's queue as polls read it: the first `MAX_AHEAD_READ` queued ids (head first) with the prefix sums of
    their work, the work running jobs have left, live workers, the speed; read at `read_at` (monotonic clock)."""

    index: dict[str, int]
    prefix: list[float]
    running: list[float]
    workers: int
    unit_seconds: float | None
    read_at: float

    def eta(self, job_id: str, position: int, own_work: float) -> tuple[float, float] | None:
        """`predict_wait` of the job now `position` jobs from the head: the work of the jobs just ahead of it when
        the state was read (the head has moved on since, not its order), the rest assumed like those read."""
        queued = len(self.prefix) - 1
        average = self.prefix[-1] / queued if queued else own_work
        at = self.index.get(job_id)
        known = min(at, position) if at is not None else 0
        ahead = (self.prefix[at] - self.prefix[at - known] if at is not None else 0.0) + average * (position - known)
        return estimate_queue_eta([ahead], self.running, own_work, self.unit_seconds, self.workers)


class QueueViews:
    """Queue positions and ETAs for the API's polls, on its async Redis clients: the position read live (one LPOS),
    the rest from a `QueueState` per model at most `QUEUE_STATE_SECONDS` old."""

    def __init__(self) -> None:
        self._states: dict[tuple[int, str], QueueState] = {}
        self._reading: set[tuple[int, str]] = set()
        self._work: OrderedDict[str, float] = OrderedDict()

    async def with_queue_view(self, job: Job, redis: AsyncRedis) -> Job:
        """The queued `job` with `queue_position`, `start_eta_seconds` and `eta_seconds` filled in where known."""
        # None: a worker took it off the queue a moment ago and is about to mark it running: it is next.
        position = await queued_position(redis, job.model, job.id) or 0
        update: dict[str, object] = {"queue_position": position}
        state = await self.state(redis, job.model)
        eta = state.eta(job.id, position, job_work(job.request))
        if eta is not None:
            update["start_eta_seconds"], update["eta_seconds"] = round(eta[0], 3), round(eta[1], 3)
        return job.model_copy(update=update)

    async def state(self, redis: AsyncRedis, model: str) -> QueueState:
        """The model's `QueueState`, read anew when older than `QUEUE_STATE_SECONDS` (by one of the polls at a time)."""
        key = (id(redis), model)
        state = self._states.get(key)
        if state is not None and (time.monotonic() - state.read_at < QUEUE_STATE_SECONDS or key in self._reading):
            return state  # fresh, or being read anew by another poll: this one answers from the last
        self._reading.add(key)
        try:
            state = self._states[key] = await self._read(redis, model)
        finally:
            self._reading.discard(key)
        return state

    async def _read(self, redis: AsyncRedis, model: str) -> QueueState:
        read_at = time.monotonic()
        pipe = redis.pipeline(transaction=False)
        peek_into(pipe, model, MAX_AHEAD_READ)
        pipe.smembers(keys.running_jobs_key())
        pipe.zcount(keys.model_workers_key(model), time.time(), "+inf")  # scored by when each worker's record lapses
        pipe.hget(keys.model_stats_key(model), "unit_seconds")
        queued_raw, running_raw, workers, unit = await pipe.execute()
        queued = [raw.decode() for raw in queued_raw]
        unknown = [job_id for job_id in queued if job_id not in self._work]
        running = [raw.decode() for raw in running_raw]
        pipe = redis.pipeline(transaction=False)
        for job_id in unknown:
            pipe.hget(keys.job_key(job_id), "work")
        for job_id in running:
            pipe.hmget(keys.job_key(job_id), ["model", "work", "step", "total"])
        replies = await pipe.execute() if unknown or running else []
        for job_id, work in zip(unknown, replies[: len(unknown)], strict=True):
            if work is not None:
                self._remember(job_id, float(work))
        running_left = []
        for owner, work, step, total in replies[len(unknown) :]:
            if work is None or owner != model.encode():
                continue  # another model's, or ended meanwhile
            done = int(step or 0) / int(total) if total and int(total) else 0.0
            running_left.append(float(work) * (1.0 - done))
        prefix = [0.0]
        index: dict[str, int] = {}
        for job_id in queued:
            if job_id in self._work:  # else gone meanwhile: counts for nothing
                index[job_id] = len(prefix) - 1
                prefix.append(prefix[-1] + self._work[job_id])
        return QueueState(
            index=index,
            prefix=prefix,
            running=running_left,
            workers=int(workers),
            unit_seconds=float(unit) if unit is not None else None,
            read_at=read_at,
        )

    def _remember(self, job_id: str, work: float) -> None:
        self._work[job_id] = work
        if len(self._work) > _WORK_CACHE_SIZE:
            self._work.popitem(last=False)
