"""Every Redis key imagegen writes, one function each. No other module spells a key."""

from __future__ import annotations

PREFIX = "imagegen"


def job_key(job_id: str) -> str:
    """Hash holding one job's record."""
    return f"{PREFIX}:job:{job_id}"


def job_image_key(job_id: str, index: int) -> str:
    """Bytes of the `index`-th result image of a job."""
    return f"{PREFIX}:job:{job_id}:image:{index}"


def job_input_key(job_id: str, field: str) -> str:
    """Bytes of an input image of a job (`init_image`, `image`, `mask_image`), as the client sent them."""
    return f"{PREFIX}:job:{job_id}:input:{field}"


def owner_jobs_key(owner: str) -> str:
    """Sorted set of the ids of one API key's jobs, scored by creation time (`GET /jobs` for that key)."""
    return f"{PREFIX}:jobs:owner:{owner}"


def all_jobs_key() -> str:
    """Sorted set of the ids of every job, scored by creation time (`GET /jobs` for admins)."""
    return f"{PREFIX}:jobs:all"


def job_events_key(job_id: str) -> str:
    """Redis Stream of one job's events."""
    return f"{PREFIX}:job:{job_id}:events"


def worker_key(worker_id: str) -> str:
    """A live worker's self-description, refreshed by its heartbeat and expiring without it."""
    return f"{PREFIX}:worker:{worker_id}"


def workers_key() -> str:
    """Set of the ids of workers that registered (dead ones are pruned when read)."""
    return f"{PREFIX}:workers"


def model_workers_key(model: str) -> str:
    """Sorted set of the ids of one model's workers, scored by when each one's record expires without a new beat."""
    return f"{PREFIX}:model:{model}:workers"


def queue_name(model: str) -> str:
    """Name of the RQ queue of one model (RQ stores it under its own `rq:queue:` prefix)."""
    return f"{PREFIX}.{model}"


def model_stats_key(model: str) -> str:
    """Hash of a model's recent measured speed (seconds per unit of work), for queue ETAs."""
    return f"{PREFIX}:model:{model}:stats"


def running_jobs_key() -> str:
    """Set of the ids of jobs marked running (the reaper checks their workers are alive)."""
    return f"{PREFIX}:running"


def sweep_lock_key() -> str:
    """Held (expiring) by the worker that runs the fleet's recovery sweep for one heartbeat: one sweep a beat in all."""
    return f"{PREFIX}:sweep:lock"


def api_key_active_jobs_key(key_id: str) -> str:
    """Set of an API key's queued and running job ids (its concurrency cap)."""
    return f"{PREFIX}:apikey:{key_id}:active"


def api_key_rate_key(key_id: str, window: int) -> str:
    """Request counter of an API key in one rate-limit window."""
    return f"{PREFIX}:apikey:{key_id}:rate:{window}"


def idempotency_key(owner: str, key_hash: str) -> str:
    """Which job an `Idempotency-Key` (hashed, per owner) created, with the hash of its body."""
    return f"{PREFIX}:idempotency:{owner}:{key_hash}"


def a1111_model_key(owner: str) -> str:
    """The model an owner (API key id, or `anonymous`) chose with the A1111 `options` route (`sd_model_checkpoint`)."""
    return f"{PREFIX}:a1111:{owner}:model"


def a1111_current_job_key(owner: str) -> str:
    """The id of an owner's latest job submitted through the A1111 routes (what `progress`, `interrupt` and `skip`
    act on)."""
    return f"{PREFIX}:a1111:{owner}:job"


def webhook_deliveries_key() -> str:
    """Redis Stream of webhook deliveries to make (read by the API's deliverers as one consumer group)."""
    return f"{PREFIX}:webhooks"


def webhook_retries_key() -> str:
    """Sorted set of webhook deliveries waiting for a retry, scored by when."""
    return f"{PREFIX}:webhooks:retry"


def queue_deadlines_key() -> str:
    """Sorted set of queued job ids scored by the time they expire if not started."""
    return f"{PREFIX}:deadlines"


def stored_objects_key() -> str:
    """Sorted set of object-store keys (result and input images in the bucket) scored by when they are to be
    deleted: the API's sweeper deletes those that are due (`core/object_store.py`)."""
    return f"{PREFIX}:objects:expiry"


# Object-store keys (the bucket's, not Redis's), built here too so one module spells every key. `prefix` is the
# deployment's (`IMAGEGEN_RESULT_STORE=s3://bucket/prefix`), empty or ending in `/`.


def result_object_key(prefix: str, job_id: str, attempt: int, index: int, extension: str) -> str:
    """Object of a job's `index`-th result image as written by its run `attempt` (a losing attempt never overwrites
    the winner's objects)."""
    return f"{prefix}jobs/{job_id}/a{attempt}/{index}.{extension}"


def input_object_key(prefix: str, job_id: str, field: str) -> str:
    """Object of an input image of a job (`init_image`, `image`, `mask_image`), as the client sent it."""
    return f"{prefix}jobs/{job_id}/inputs/{field}"
