"""The registry of live workers: each refreshes its record on a heartbeat, and a record without one expires."""

from __future__ import annotations

import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.samplers import Sampler
from core.schemas import ModelInfo, WorkerInfo


def heartbeat_ttl(heartbeat_seconds: float) -> int:
    """Seconds a worker record outlives its last heartbeat: three missed beats mean the worker is gone."""
    return max(2, int(heartbeat_seconds * 3 + 0.999))


def publish_worker(redis: Redis, info: WorkerInfo, heartbeat_seconds: float) -> None:
    """Write (or refresh) a worker's record, and its place among its model's workers."""
    ttl = heartbeat_ttl(heartbeat_seconds)
    now = time.time()
    pipe = redis.pipeline()
    pipe.set(keys.worker_key(info.id), info.model_dump_json(), ex=ttl)
    pipe.sadd(keys.workers_key(), info.id)
    pipe.zadd(keys.model_workers_key(info.model), {info.id: now + ttl})
    pipe.zremrangebyscore(keys.model_workers_key(info.model), "-inf", now)  # those whose record expired
    pipe.execute()


def remove_worker(redis: Redis, worker_id: str, model: str | None = None) -> None:
    """Take a worker (of `model`, when given) out of the registry when it stops."""
    pipe = redis.pipeline()
    pipe.delete(keys.worker_key(worker_id))
    pipe.srem(keys.workers_key(), worker_id)
    if model is not None:
        pipe.zrem(keys.model_workers_key(model), worker_id)
    pipe.execute()


async def serves(redis: AsyncRedis, model: str) -> bool:
    """Whether a live worker serves `model`: one sorted-set read and one EXISTS, not every worker's record (what a
    submission asks, on the API's asyncio client: `bench/fleet.py` measured reading them all costing Redis ~1 µs per
    worker per job)."""
    live = keys.model_workers_key(model)
    [first] = await redis.zrangebyscore(live, time.time(), "+inf", start=0, num=1) or [None]
    if first is None:
        return False
    if await redis.exists(keys.worker_key(first.decode())):
        return True
    # Its record went early (a worker that stopped without leaving the set): ask of every one the set holds.
    others = await redis.zrangebyscore(live, time.time(), "+inf")
    return bool(others) and await redis.exists(*(keys.worker_key(raw.decode()) for raw in others)) > 0


def model_workers(redis: Redis, model: str) -> list[WorkerInfo]:
    """The live workers of `model` (their records)."""
    ids = [raw.decode() for raw in redis.zrangebyscore(keys.model_workers_key(model), time.time(), "+inf")]
    records = redis.mget([keys.worker_key(worker_id) for worker_id in ids]) if ids else []
    return [WorkerInfo.model_validate_json(record) for record in records if record is not None]


def live_workers(redis: Redis) -> list[WorkerInfo]:
    """Workers whose heartbeat has not expired; ids of expired ones are pruned from the set."""
    ids = sorted(member.decode() for member in redis.smembers(keys.workers_key()))
    if not ids:
        return []
    records = redis.mget([keys.worker_key(worker_id) for worker_id in ids])
    dead = [worker_id for worker_id, record in zip(ids, records, strict=True) if record is None]
    if dead:
        redis.srem(keys.workers_key(), *dead)
    return [WorkerInfo.model_validate_json(record) for record in records if record is not None]


def live_workers_of(redis: list[Redis]) -> list[WorkerInfo]:
    """`live_workers` of each Redis of a deployment whose queues are sharded by model (each worker registers on its
    model's Redis)."""
    return [worker for client in redis for worker in live_workers(client)]


def models_served(
    workers: list[WorkerInfo], known: dict[str, tuple[str | None, dict]] | None = None
) -> list[ModelInfo]:
    """Every model that is `known` (name -> (family, request defaults)) or served by a live worker, with how many
    live workers serve it, their ids, samplers, devices and LoRA adapters."""
    by_model: dict[str, list[WorkerInfo]] = {name: [] for name in known or {}}
    for worker in workers:
        by_model.setdefault(worker.model, []).append(worker)
    infos = []
    for name, group in sorted(by_model.items()):
        family, defaults = (known or {}).get(name, (None, {}))
        infos.append(
            ModelInfo(
                name=name,
                family=family,
                defaults=defaults,
                workers=len(group),
                worker_ids=sorted(w.id for w in group),
                samplers=_in_table_order({s for w in group for s in w.samplers}),
                devices=sorted({w.device for w in group}),
                loras=sorted({lora for w in group for lora in w.loras}),
            )
        )
    return infos


def _in_table_order(samplers: set[Sampler]) -> list[Sampler]:
    """The samplers in the sampler table's order (as `capabilities.samplers_by_mode` lists them)."""
    return [sampler for sampler in Sampler if sampler in samplers]
