"""Accepting a request: pick its model, check limits and backpressure, fix its seed, record it and queue it
atomically; an `Idempotency-Key` replays the job it first created.

A submission runs on the event loop and waits on the API's asyncio Redis clients, holding no thread: under load, a
thread of the pool is for what cannot wait without one. Its common path is two round trips (the key's quota, then the
job's transaction); its rare ones (a full queue's predicted wait, the model list of an unknown model, the LoRA check,
the upload of input images to a bucket) run their synchronous reads in a thread."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.catalog import BUILTIN_MODELS, ModelEntry, entry_of, model_entries, served_entry
from core.jobs import JobStore
from core.queueing import queued_count
from core.redis_connection import execute_replicated, replicated_transaction
from core.schemas import SEED_MAX, GenerateRequest, Job, WorkerInfo, check_family_rules, check_limits
from core.settings import Settings
from core.sharding import RedisShards, new_job_id
from core.workers import live_workers, model_workers, serves
from service.auth import Caller, check_submission_quota
from service.deps import async_shards, get_shards
from service.errors import ApiError
from service.inputs import prepare_inputs
from service.metrics import JOBS_SUBMITTED
from service.queue_view import predict_wait
from service.results import ResultImages
from service.webhook_targets import WebhookTargetRefusedError, check_webhook_url

log = logging.getLogger(__name__)

# Retry-After of a 503 for a model without a live worker: about one worker start-up.
NO_WORKER_RETRY_SECONDS = 10

# Whether a live worker serves the model, and its queue's depth, come from a short per-process memory rather than from
# Redis on every submission (three commands a job fewer: docs/performance.md). A model seen served is trusted for
# SERVED_MEMORY_SECONDS (not one seen unserved: a worker that just started is taken at once). A depth is read again
# after DEPTH_MEMORY_SECONDS, or as soon as the estimate (the depth read plus this process's submissions since) reaches
# half the limit, so that the limit itself is checked on a live depth.
SERVED_MEMORY_SECONDS = 1.0
DEPTH_MEMORY_SECONDS = 0.5


@dataclass(frozen=True)
class SubmissionClients:
    """The Redis clients of a submission, one per Redis of the deployment of each kind: the asyncio ones carry its
    waits; the synchronous ones serve its rare reads, in a thread."""

    sync: RedisShards[Redis]
    aio: RedisShards[AsyncRedis]

    @classmethod
    def of(cls, request: Request) -> SubmissionClients:
        """The app's clients, the asyncio ones of the running event loop (`service.deps.async_shards`)."""
        return cls(get_shards(request), async_shards(request))


@dataclass
class _Seen:
    """What a submission read of a model on a client, when (monotonic clock), and the submissions counted since."""

    client: weakref.ref[AsyncRedis]
    at: float
    value: int
    added: int = 0


_served: dict[tuple[int, str], _Seen] = {}
_depths: dict[tuple[int, str], _Seen] = {}


def _remembered(memory: dict[tuple[int, str], _Seen], redis: AsyncRedis, model: str, seconds: float) -> _Seen | None:
    seen = memory.get((id(redis), model))
    if seen is None or seen.client() is not redis or time.monotonic() - seen.at >= seconds:
        return None
    return seen


async def _served_now(redis: AsyncRedis, model: str) -> bool:
    if _remembered(_served, redis, model, SERVED_MEMORY_SECONDS) is not None:
        return True
    served = await serves(redis, model)
    if served:
        _served[(id(redis), model)] = _Seen(weakref.ref(redis), time.monotonic(), 1)
    return served


async def _queue_depth(redis: AsyncRedis, model: str, limit: int) -> int:
    """The model's queue depth: remembered, or read live when stale or the estimate nears `limit`."""
    seen = _remembered(_depths, redis, model, DEPTH_MEMORY_SECONDS)
    if seen is not None and 2 * (seen.value + seen.added) < limit:
        seen.added += 1  # this submission, should it be accepted: a rejected one only makes the next read sooner
        return seen.value + seen.added - 1
    depth = await queued_count(redis, model)
    _depths[(id(redis), model)] = _Seen(weakref.ref(redis), time.monotonic(), depth, 1)
    return depth


def known_models(settings: Settings, workers: list[WorkerInfo], entries: dict[str, ModelEntry]) -> list[str]:
    """Models a request may name: the configured default, the models file's (`entries` minus the built-in ones), and
    whatever live workers serve."""
    named = set(entries) - set(BUILTIN_MODELS) if settings.models_file else set()
    return sorted({served_entry(settings, entries)[0]} | named | {worker.model for worker in workers})


async def _resolve_model(
    request: GenerateRequest, redis: Redis, aredis: AsyncRedis, settings: Settings
) -> tuple[str, ModelEntry]:
    """The model a request goes to and its entry; 422 for an unknown one, 503 for one no live worker serves (unless
    `queue_without_workers`). `redis`, `aredis`: the model's (its workers register there), sync and asyncio."""
    entries = model_entries(settings)
    model = request.model or served_entry(settings, entries)[0]
    configured = {*known_models(settings, [], entries), *settings.redis_shards}
    # Whether a worker serves it matters for a model not configured, or when jobs may not queue without workers: read
    # then only (not every worker's record: that read grows with the fleet, docs/scaling.md).
    served = (model not in configured or not settings.queue_without_workers) and await _served_now(aredis, model)
    if model not in configured and not served:
        workers = await anyio.to_thread.run_sync(live_workers, redis)  # a wrong name, rare: its listing in a thread
        models = sorted({*configured, *known_models(settings, workers, entries)})
        raise ApiError(
            422,
            f"model: unknown model {model!r}; served models: {', '.join(models)}",
            code="invalid_request",
            details=[{"field": "model", "message": "unknown model", "allowed": models}],
        )
    if not settings.queue_without_workers and not served:
        raise ApiError(
            503,
            f"model {model}: no live worker serves it now; retry later",
            code="no_worker",
            details=[{"field": "model", "message": "no live worker"}],
            headers={"Retry-After": str(NO_WORKER_RETRY_SECONDS)},
        )
    if request.loras:
        _check_loras(request, model, await anyio.to_thread.run_sync(model_workers, redis, model))
    entry = entry_of(settings, model, entries) or ModelEntry(source=model)
    return model, entry


def _check_loras(request: GenerateRequest, model: str, workers: list[WorkerInfo]) -> None:
    """422 for a LoRA adapter that none of the model's live workers has (with none live, the worker checks)."""
    if not request.loras or not workers:
        return
    offered = sorted({name for worker in workers for name in worker.loras})
    missing = [lora.name for lora in request.loras if lora.name not in offered]
    if missing:
        raise ApiError(
            422,
            f"loras: unknown adapter {', '.join(missing)} for model {model}; it has: {', '.join(offered) or 'none'}",
            code="invalid_request",
            details=[{"field": "loras", "message": "unknown adapter", "allowed": offered}],
        )


def apply_model_defaults(request: GenerateRequest, model: str, entry: ModelEntry) -> GenerateRequest:
    """The request with its model named and the fields it left out taken from the model's defaults."""
    update: dict[str, Any] = {
        field: value for field, value in entry.defaults().items() if field not in request.model_fields_set
    }
    if not update:
        return request.model_copy(update={"model": model})
    try:
        return GenerateRequest.model_validate({**request.model_dump(), **update, "model": model})
    except ValidationError as exc:  # e.g. a model default of 1 step makes the request's strength run none
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def _fit_image_sides(request: GenerateRequest, sent: set[str], multiple: int) -> GenerateRequest:
    """The request with the sides it took from its input image (those the client did not give) rounded down to the
    model's size step (8 already; 16 for the flow families)."""
    update = {
        side: value - value % multiple
        for side in ("width", "height")
        if side not in sent and (value := getattr(request, side)) % multiple
    }
    return request.model_copy(update=update) if update else request


def _check_webhook(request: GenerateRequest, settings: Settings, caller: Caller) -> None:
    if not request.webhook_url:
        return
    if not settings.webhook_secret:
        raise ApiError(422, "webhook_url: webhooks are not enabled on this server", code="invalid_request")
    try:
        check_webhook_url(request.webhook_url, settings.webhook_allow_hosts)
    except WebhookTargetRefusedError as exc:
        # An SSRF probe shows here first: log who tried which host and why it was refused, not only at delivery.
        try:
            host = urlsplit(request.webhook_url).hostname
        except ValueError:  # an unparsable URL (its refusal says so)
            host = None
        reason = str(exc).removeprefix("webhook_url: ")
        log.warning(
            "webhook target refused at submission: key %s, host %s: %s",
            caller.key_id or "anonymous",
            host,
            reason,
            extra={"key_id": caller.key_id, "webhook_host": host, "reason": reason},
        )
        raise ApiError(422, str(exc), code="invalid_request", details=[{"field": "webhook_url"}]) from exc


async def _check_backpressure(
    request: GenerateRequest, model: str, redis: Redis, aredis: AsyncRedis, store: JobStore, settings: Settings
) -> None:
    """429 when the model's queue is full, or when the job would start later than its `max_wait_seconds`; the
    predicted wait (rare: a full queue, or a request that asks) reads on the sync client, in a thread."""
    depth = await _queue_depth(aredis, model, settings.max_queue_depth)
    if depth >= settings.max_queue_depth:
        eta = await anyio.to_thread.run_sync(predict_wait, redis, store, model, request, 1)
        retry_after = max(1, math.ceil(eta[0])) if eta else 5
        raise ApiError(
            429,
            f"the queue of model {model} is full ({depth} jobs, limit {settings.max_queue_depth}); retry later",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )
    if request.max_wait_seconds is not None:
        eta = await anyio.to_thread.run_sync(predict_wait, redis, store, model, request, depth)
        if eta is not None and eta[0] > request.max_wait_seconds:
            raise ApiError(
                429,
                f"max_wait_seconds: the job would start in about {eta[0]:.0f}s, later than {request.max_wait_seconds}s",
                code="wait_too_long",
                details={"predicted_start_seconds": round(eta[0], 3), "predicted_finish_seconds": round(eta[1], 3)},
                headers={"Retry-After": str(max(1, math.ceil(eta[0] - request.max_wait_seconds)))},
            )


def _body_hash(request: GenerateRequest) -> str:
    return hashlib.sha256(json.dumps(request.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


async def _replay(redis: RedisShards[AsyncRedis], idem_key: str, body_hash: str) -> Job | None:
    """The job an earlier request with this key created (the key on the default Redis, the job on its own); 409 when
    that request had another body."""
    value = await redis.default.get(idem_key)
    if value is None:
        return None
    job_id, first_hash = value.decode().split(" ", 1)
    if first_hash != body_hash:
        raise ApiError(409, "Idempotency-Key was already used with a different request body", code="conflict")
    job = JobStore.job_from_hash(await redis.for_job(job_id).hgetall(keys.job_key(job_id)))
    if job is None:
        raise ApiError(409, f"Idempotency-Key: the job it created ({job_id}) has expired", code="conflict")
    return job


async def _prepared(request: GenerateRequest, settings: Settings) -> tuple[GenerateRequest, dict[str, bytes]]:
    """`prepare_inputs`: in a thread when the request carries images (decoding and checking them is CPU work that
    would stall every other request on the loop)."""
    prepare = partial(prepare_inputs, request, max_pixels=settings.max_pixels, max_bytes=settings.max_input_image_bytes)
    return await anyio.to_thread.run_sync(prepare) if request.image_fields() else prepare()


async def submit(
    request: GenerateRequest,
    clients: SubmissionClients,
    store: JobStore,
    settings: Settings,
    caller: Caller,
    idempotency_key: str | None = None,
    results: ResultImages | None = None,
) -> tuple[Job, bool]:
    """Validate `request` against this deployment and queue it; returns (job, replayed). Its input images go to
    `results`' bucket when it has one (else into Redis with the record). The job goes to its model's Redis (queues
    sharded by model: `clients`); `store` is the default Redis's, and idempotency keys live there."""
    idem_key = body_hash = None
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 255:
            raise ApiError(422, "Idempotency-Key: 1 to 255 characters", code="invalid_request")
        key_hash = hashlib.sha256(idempotency_key.encode()).hexdigest()
        idem_key = keys.idempotency_key(caller.key_id or "anonymous", key_hash)
        body_hash = _body_hash(request)
        replayed = await _replay(clients.aio, idem_key, body_hash)
        if replayed is not None:
            return replayed, True

    sent = set(request.model_fields_set)
    request, inputs = await _prepared(request, settings)
    _check_webhook(request, settings, caller)
    target = request.model or served_entry(settings, model_entries(settings))[0]
    redis, aredis = clients.sync.for_model(target), clients.aio.for_model(target)  # the model's Redis from here on
    if redis is not store.redis:
        store = JobStore.from_settings(redis, settings)
    model, entry = await _resolve_model(request, redis, aredis, settings)
    if inputs:
        request = _fit_image_sides(request, sent, entry.rules.size_multiple)
    request = apply_model_defaults(request, model, entry)
    # The job as it will run (the model's defaults applied) keeps its family's rules and the deployment's limits.
    check_family_rules(request, entry.rules, family=entry.family.value, modes=entry.modes)
    check_limits(request, max_pixels=settings.max_pixels)
    await check_submission_quota(caller, clients.aio.all(), settings)
    await _check_backpressure(request, model, redis, aredis, store, settings)
    seed = request.seed if request.seed is not None else secrets.randbelow(SEED_MAX + 1)
    request = request.model_copy(update={"seed": seed})

    job_id = new_job_id(settings, model)  # a sharded model's ids name it: later requests find its Redis
    if idem_key is not None and body_hash is not None:
        claimed = await clients.aio.default.set(
            idem_key, f"{job_id} {body_hash}", nx=True, ex=settings.idempotency_ttl_seconds
        )
        if not claimed:  # a concurrent request with the same key won the race
            replayed = await _replay(clients.aio, idem_key, body_hash)
            if replayed is not None:
                return replayed, True
    if inputs and results is not None and not results.store.inline:
        # Into the bucket first: the record that names them must not exist without them. boto3 blocks: in a thread.
        life = store.job_queue_ttl(request) + store.job_timeout + store.result_ttl
        await anyio.to_thread.run_sync(results.put_inputs, clients.sync.default, job_id, inputs, life)
        inputs = {}
    pipe = replicated_transaction(aredis)  # a transaction that can WAIT for replicas on the connection that wrote it
    pipe.multi()  # explicit MULTI first: RQ's enqueue expects it when handed a pipeline that already has commands
    job = store.create(job_id, model, request, owner=caller.key_id, inputs=inputs, pipeline=pipe)  # record + queue
    _, replicas = await execute_replicated(pipe, settings.redis_min_replicas, settings.redis_replica_timeout_ms)
    JOBS_SUBMITTED.labels(model).inc()
    if replicas is not None and replicas < settings.redis_min_replicas:
        raise _not_replicated(job, replicas, settings)
    return job, False


def _not_replicated(job: Job, replicas: int, settings: Settings) -> ApiError:
    """The 503 of a job written to the primary that too few replicas acknowledged in time: it is queued and will
    run, unless the primary is lost before it reaches a replica (a failover then forgets it)."""
    return ApiError(
        503,
        f"job {job.id} is queued on the Redis primary, but {replicas} of the {settings.redis_min_replicas} replicas "
        f"required acknowledged it within {settings.redis_replica_timeout_ms} ms: a failover now could lose it. "
        f"Follow it with GET /jobs/{job.id}, or retry with the same Idempotency-Key (not without one: that "
        "queues a second job)",
        code="not_replicated",
        details={
            "job_id": job.id,
            "replicas_acknowledged": replicas,
            "replicas_required": settings.redis_min_replicas,
        },
        headers={"Retry-After": "1"},
    )
