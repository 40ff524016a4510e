"""A model's recent measured speed (seconds per unit of work), written by workers and read for queue ETAs."""

from __future__ import annotations

from redis import Redis

from core import keys
from core.eta import updated_unit_seconds

SPEED_TTL_SECONDS = 7 * 24 * 3600


def record_speed(redis: Redis, model: str, seconds: float, work: float) -> None:
    """Fold one finished job's denoising time into the model's moving average."""
    if work <= 0 or seconds <= 0:
        return
    key = keys.model_stats_key(model)
    previous = redis.hget(key, "unit_seconds")
    value = updated_unit_seconds(float(previous) if previous is not None else None, seconds / work)
    pipe = redis.pipeline(transaction=False)
    pipe.hset(key, "unit_seconds", value)
    pipe.expire(key, SPEED_TTL_SECONDS)
    pipe.execute()


def unit_seconds(redis: Redis, model: str) -> float | None:
    """Seconds per unit of work (`core.eta.job_work`) lately measured on `model`, or None before any job ran."""
    value = redis.hget(keys.model_stats_key(model), "unit_seconds")
    return float(value) if value is not None else None
