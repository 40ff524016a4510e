"""Every Redis key imagegen writes, one function each. No other module spells a key."""

from __future__ import annotations

PREFIX = "imagegen"


def job_key(job_id: str) -> str:
    """Hash holding one job's record."""
    return f"{PREFIX}:job:{job_id}"


def job_image_key(job_id: str, index: int) -> str:
    """Bytes of the `index`-th result image of a job."""
    return f"{PREFIX}:job:{job_id}:image:{index}"


def job_events_key(job_id: str) -> str:
    """Redis Stream of one job's events."""
    return f"{PREFIX}:job:{job_id}:events"


def worker_key(worker_id: str) -> str:
    """A live worker's self-description, refreshed by its heartbeat and expiring without it."""
    return f"{PREFIX}:worker:{worker_id}"


def workers_key() -> str:
    """Set of the ids of workers that registered (dead ones are pruned when read)."""
    return f"{PREFIX}:workers"


def queue_name(model: str) -> str:
    """Name of the RQ queue of one model (RQ stores it under its own `rq:queue:` prefix)."""
    return f"{PREFIX}.{model}"


def model_stats_key(model: str) -> str:
    """Hash of a model's recent measured speed (seconds per unit of work), for queue ETAs."""
    return f"{PREFIX}:model:{model}:stats"
