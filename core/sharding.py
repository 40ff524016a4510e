"""Queues sharded by model across Redis primaries: which Redis holds a model's queue, job records, event streams and
workers, and which one holds a given job.

`IMAGEGEN_REDIS_SHARDS` maps models to Redis URLs; every other model, and what belongs to no model (idempotency
keys, the per-key rate counter), lives on `IMAGEGEN_REDIS_URL`. A worker talks only to its model's Redis; the API
routes a submission by its model and a request about a job by the job's id: the id of a job of a sharded model starts
with a tag of its model (`<tag>-<uuid>`), so finding its Redis costs no lookup, and a polling client loads only its
job's shard. A job of an unsharded model keeps a plain id, on the default Redis. What spans the deployment (sweeps,
metrics, the model lists, a key's active-job count) reads every Redis (`RedisShards.all`).

A shard is a plain Redis URL (its own TLS and credentials in it), or `sentinel://[user:password@]master-name[/db]`:
the primary that the sentinels of `IMAGEGEN_REDIS_SENTINELS` name for that master (Sentinel monitors several), with
the TLS and query options of `IMAGEGEN_REDIS_URL`, and its credentials unless the shard gives its own.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from redis import Redis

from core.redis_connection import redis_client
from core.settings import Settings, sentinel_shard

Client = TypeVar("Client")

# Hex digits of a model's tag in its jobs' ids: 2^32 tags, so two sharded models' tags do not collide in practice
# (a collision is refused when the settings are read).
TAG_LENGTH = 8


def model_tag(model: str) -> str:
    """The tag that starts the ids of a sharded model's jobs."""
    return hashlib.sha256(model.encode()).hexdigest()[:TAG_LENGTH]


def new_job_id(settings: Settings, model: str) -> str:
    """A fresh job id for `model`: tagged with the model when it is sharded, a plain uuid otherwise."""
    plain = uuid.uuid4().hex
    return f"{model_tag(model)}-{plain}" if model in settings.redis_shards else plain


def shard_settings(settings: Settings, model: str) -> Settings:
    """`settings` with the Redis of `model`: a shard's URL (and no Sentinel), or its Sentinel master and db."""
    url = settings.redis_shards.get(model)
    if url is None:
        return settings
    sentinel = sentinel_shard(url)
    if sentinel is None:
        return settings.model_copy(update={"redis_url": url, "redis_sentinels": []})
    return settings.model_copy(
        update={"redis_url": sentinel.primary_url(settings.redis_url), "redis_sentinel_master": sentinel.master}
    )


def _address(settings: Settings) -> tuple[str, str | None]:
    """What tells two Redis of the deployment apart: the URL, and the Sentinel master when sentinels name it."""
    return settings.redis_url, settings.redis_sentinel_master if settings.redis_sentinels else None


def redis_for_model(settings: Settings, model: str, **options: Any) -> Redis:
    """A client of the Redis that holds `model`'s queue and jobs (what a worker of that model talks to)."""
    return redis_client(shard_settings(settings, model), **options)


class RedisShards(Generic[Client]):
    """One client per Redis of the deployment (sync or asyncio, as `make` builds them): the default one and each
    distinct shard (URL, or Sentinel master); picks the one of a model or of a job id."""

    def __init__(self, settings: Settings, make: Callable[[Settings], Client], default: Client | None = None) -> None:
        """`make` builds a client from settings; `default`: a client of `IMAGEGEN_REDIS_URL` made already."""
        self.settings = settings
        self.default: Client = default if default is not None else make(settings)
        self._by_model: dict[str, Client] = {}
        by_address: dict[tuple[str, str | None], Client] = {_address(settings): self.default}
        for model in settings.redis_shards:
            shard = shard_settings(settings, model)
            address = _address(shard)
            if address not in by_address:
                by_address[address] = make(shard)
            self._by_model[model] = by_address[address]
        self._others = list(by_address.values())[1:]  # the default is first
        self._models_by_tag: dict[str, str] = {}
        for model in settings.redis_shards:
            other = self._models_by_tag.setdefault(model_tag(model), model)
            if other != model:  # 1 in 4 billion: rename one of them
                raise ValueError(f"redis_shards: models {other!r} and {model!r} have the same job id tag")

    def for_model(self, model: str) -> Client:
        """The client of the Redis that holds `model`'s queue, jobs and workers."""
        return self._by_model.get(model, self.default)

    def for_job(self, job_id: str) -> Client:
        """The client of the Redis that holds the job `job_id` (by the model tag its id starts with)."""
        tag, sep, _ = job_id.partition("-")
        model = self._models_by_tag.get(tag) if sep else None
        return self.for_model(model) if model is not None else self.default

    def all(self) -> list[Client]:
        """Every Redis of the deployment once, the default first (for what spans them: sweeps, metrics, models)."""
        return [self.default, *self._others]
