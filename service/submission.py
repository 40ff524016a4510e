"""Accepting a request: pick its model, check deployment limits, fix its seed, record it and queue it atomically."""

from __future__ import annotations

import secrets
import uuid

from redis import Redis

from core.jobs import JobStore
from core.queueing import enqueue_generation, model_queue
from core.schemas import SEED_MAX, GenerateRequest, Job, check_limits
from core.settings import Settings
from core.workers import live_workers
from service.errors import ApiError
from service.metrics import JOBS_SUBMITTED


def known_models(redis: Redis, settings: Settings) -> list[str]:
    """Models a request may name: the configured default and whatever live workers serve."""
    return sorted({settings.served_model_name()} | {worker.model for worker in live_workers(redis)})


def submit(request: GenerateRequest, redis: Redis, store: JobStore, settings: Settings) -> Job:
    """Validate `request` against this deployment and queue it; the returned job is `queued`."""
    check_limits(request, max_pixels=settings.max_pixels)
    model = request.model or settings.served_model_name()
    models = known_models(redis, settings)
    if model not in models:
        raise ApiError(
            422,
            f"model: unknown model {model!r}; served models: {', '.join(models)}",
            code="invalid_request",
            details=[{"field": "model", "message": "unknown model", "allowed": models}],
        )
    seed = request.seed if request.seed is not None else secrets.randbelow(SEED_MAX + 1)
    request = request.model_copy(update={"model": model, "seed": seed})

    job_id = uuid.uuid4().hex
    pipe = redis.pipeline(transaction=True)
    pipe.multi()  # explicit MULTI first: RQ's enqueue expects it when handed a pipeline that already has commands
    job = store.create(job_id, model, request, pipeline=pipe)
    enqueue_generation(
        model_queue(redis, model),
        job_id,
        request,
        queue_ttl=settings.queue_ttl_seconds,
        job_timeout=settings.job_timeout_seconds,
        pipeline=pipe,
    )
    pipe.execute()
    JOBS_SUBMITTED.labels(model).inc()
    return job
