"""A model's recent measured speed (seconds per unit of work), written by workers and read for queue ETAs."""

from __future__ import annotations

import time

from redis import Redis

from core import keys
from core.eta import updated_unit_seconds

SPEED_TTL_SECONDS = 7 * 24 * 3600
SPEED_TTL_REFRESH_SECONDS = 3600
# When this process next refreshes each stats key's TTL (monotonic clock).
_expire_due: dict[str, float] = {}


def record_speed(redis: Redis, model: str, seconds: float, work: float) -> None:
    """Fold one finished job's denoising time into the model's moving average."""
    if work <= 0 or seconds <= 0:
        return
    key = keys.model_stats_key(model)
    previous = redis.hget(key, "unit_seconds")
    value = updated_unit_seconds(float(previous) if previous is not None else None, seconds / work)
    redis.hset(key, "unit_seconds", value)
    # Its TTL only lets a model nobody serves any more be forgotten: refreshing it once an hour is plenty.
    if time.monotonic() >= _expire_due.get(key, 0.0):
        redis.expire(key, SPEED_TTL_SECONDS)
        _expire_due[key] = time.monotonic() + SPEED_TTL_REFRESH_SECONDS


def unit_seconds(redis: Redis, model: str) -> float | None:
    """Seconds per unit of work (`core.eta.job_work`) lately measured on `model`, or None before any job ran."""
    value = redis.hget(keys.model_stats_key(model), "unit_seconds")
    return float(value) if value is not None else None
