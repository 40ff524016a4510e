"""Recovery sweeps any process may run (the API on a timer, one worker per heartbeat), so that every job is always
in its queue, running under a live worker's lease, or ended:

- running jobs whose worker stopped beating, or beats while no longer running them (it lost Redis mid-job, or a
  failover lost its claim), are re-queued at the front (or failed `worker_lost` after `max_attempts`), once their
  lease, three heartbeats from the claim, has run out;
- jobs a worker's queue loop moved to RQ's intermediate list and never claimed (it died, or lost Redis, in between)
  go back to the front of their queue once seen there for `stranded_seconds`;
- queued jobs past their queue TTL end `expired`.

Every change is a compare-and-set (Lua or WATCH/MULTI), so concurrent sweepers never double-act, and a worker whose
job was taken back can no longer write to it (its writes are fenced by its attempt, `core/job_scripts.py`).
"""

from __future__ import annotations

import logging
import time

from redis import Redis

from core import keys
from core.jobs import JobStore
from core.queueing import model_queue, model_queues
from core.schemas import JobStatus, WorkerInfo

log = logging.getLogger(__name__)


def reap_lost_jobs(
    redis: Redis, store: JobStore, max_attempts: int, lease_seconds: float = 0.0, now: float | None = None
) -> list[tuple[str, str]]:
    """Requeue or fail each running job its worker no longer runs (heartbeat expired, or beating without it), once
    its lease (`lease_seconds` from its claim) has run out: a worker that has just claimed a job may not have beaten
    since (e.g. right after a failover, whose new primary lacks its last beat)."""
    now = time.time() if now is None else now
    actions = []
    for raw_id in redis.smembers(keys.running_jobs_key()):
        job_id = raw_id.decode()
        fields = ["status", "worker_id", "attempts", "model", "started_at"]
        status, worker_id, attempts, model, started_at = redis.hmget(keys.job_key(job_id), fields)
        if status != JobStatus.RUNNING.value.encode() or model is None:
            redis.srem(keys.running_jobs_key(), job_id)  # finished or expired meanwhile
            continue
        worker = (worker_id or b"").decode()
        if now - float(started_at or 0) < lease_seconds:
            continue  # its lease has not run out yet: too early to tell
        if _still_working_on(redis, worker, job_id, float(started_at or 0)):
            continue
        tries = int(attempts or 0)
        reason = f"worker {worker or '?'} was lost during attempt {tries}"
        if tries >= max_attempts:
            if store.mark_failed(job_id, worker, "worker_lost", f"{reason}; gave up after {tries} attempts"):
                actions.append((job_id, "failed"))
                log.warning("job %s failed: worker lost %d times", job_id, tries)
        elif store.requeue(job_id, worker, tries + 1, reason):
            actions.append((job_id, "requeued"))
            log.warning("job %s requeued: %s", job_id, reason)
    return actions


def _still_working_on(redis: Redis, worker_id: str, job_id: str, started_at: float) -> bool:
    """True while the worker's heartbeat lives and, once it has beaten since the job started, names this job."""
    record = redis.get(keys.worker_key(worker_id)) if worker_id else None
    if record is None:
        return False
    info = WorkerInfo.model_validate_json(record)
    if info.heartbeat_at.timestamp() <= started_at:
        return True  # no beat since the job started: too early to tell
    return job_id in info.current_jobs


def expire_overdue_jobs(redis: Redis, store: JobStore, now: float | None = None) -> list[str]:
    """End `expired` every queued job whose queue deadline passed, and take it off its queue."""
    now = time.time() if now is None else now
    expired = []
    for raw_id in redis.zrangebyscore(keys.queue_deadlines_key(), "-inf", now, start=0, num=500):
        job_id = raw_id.decode()
        model = redis.hget(keys.job_key(job_id), "model")
        if model is not None and store.mark_expired(job_id):
            model_queue(redis, model.decode()).remove(job_id)
            expired.append(job_id)
        redis.zrem(keys.queue_deadlines_key(), job_id)
    return expired


def give_back_stranded_jobs(
    redis: Redis, store: JobStore, stranded_seconds: float, now: float | None = None
) -> list[str]:
    """Return to the front of its queue each job left in RQ's intermediate list for `stranded_seconds` (first seen
    there by a sweep; a worker claims within milliseconds); forget ids there whose job is no longer queued."""
    now = time.time() if now is None else now
    returned = []
    for queue in model_queues(redis):
        for job_id in queue.dequeued_ids:
            key = keys.job_key(job_id)
            status, since = redis.hmget(key, ["status", "stranded_since"])
            if status != JobStatus.QUEUED.value.encode():
                queue.drop_dequeued(job_id)
            elif since is None:
                redis.hsetnx(key, "stranded_since", now)
            elif now - float(since) >= stranded_seconds and queue.give_back(job_id):
                returned.append(job_id)
                log.warning("job %s given back to its queue: dequeued but never claimed", job_id)
    return returned


def sweep(redis: Redis, store: JobStore, max_attempts: int, lease_seconds: float) -> None:
    """One pass of every recovery; `lease_seconds` (three heartbeats) bounds both the lease of a running job and how
    long a dequeued job may wait for its claim."""
    reap_lost_jobs(redis, store, max_attempts, lease_seconds)
    give_back_stranded_jobs(redis, store, lease_seconds)
    expire_overdue_jobs(redis, store)


def sweep_if_due(
    redis: Redis, store: JobStore, max_attempts: int, lease_seconds: float, interval_seconds: float, sweeper: str
) -> bool:
    """`sweep`, unless another worker swept in the last `interval_seconds` (a lock that expires); True when this call
    swept. A sweep reads every running job, so N workers each sweeping on every beat would cost Redis O(N^2) per beat
    (`bench/fleet.py` measured it saturating the fleet); the fleet sweeps once per beat in all, and a dead sweeper's
    lock lapses within one beat."""
    if not redis.set(keys.sweep_lock_key(), sweeper, nx=True, px=max(1, int(interval_seconds * 1000))):
        return False
    sweep(redis, store, max_attempts, lease_seconds)
    return True
