"""Shared dependencies as `Annotated` aliases, so handlers read like their signatures."""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated

from fastapi import Depends, Request
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core.jobs import JobStore
from core.settings import Settings
from core.sharding import RedisShards
from service.results import ResultImages


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_shards(request: Request) -> RedisShards[Redis]:
    """The app's Redis clients, one per Redis of the deployment (queues sharded by model: `core/sharding.py`)."""
    shards: RedisShards[Redis] = request.app.state.shards
    return shards


# The dependencies below are `async def` though they never await: FastAPI runs a plain `def` dependency on the thread
# pool, a hop per dependency per request that costs more CPU than the dependency itself.


async def app_settings(request: Request) -> Settings:
    """Dependency: the settings the app was created with (`get_app_settings`, without a thread-pool hop)."""
    return get_app_settings(request)


async def get_redis(request: Request) -> Redis:
    """The app's Redis client (a thread-safe connection pool): on a route of one job (`/jobs/{job_id}...`) the one of
    the Redis that holds that job, else the default Redis's."""
    shards = get_shards(request)
    job_id = request.path_params.get("job_id")
    return shards.for_job(job_id) if isinstance(job_id, str) else shards.default


def job_store_for(request: Request, job_id: str) -> JobStore:
    """The job store over the Redis that holds `job_id` (a job a route has just submitted, say)."""
    return JobStore.from_settings(get_shards(request).for_job(job_id), get_app_settings(request))


def async_shards(request: Request) -> RedisShards[AsyncRedis]:
    """The app's asyncio clients for the running event loop. A server runs one loop: the clients made with the app. A
    test client used outside its `with` block runs each request on a loop of its own, and an asyncio connection
    cannot cross loops: such a loop gets clients of its own (`app.state.make_async_shards`)."""
    state = request.app.state
    loop = asyncio.get_running_loop()  # only async routes and dependencies ask: they run on the loop
    if getattr(state, "async_loop", None) is None:
        state.async_loop = loop
    if state.async_loop is loop:
        shards: RedisShards[AsyncRedis] = state.async_shards
        return shards
    if getattr(state, "loop_async_shards", None) is None:
        state.loop_async_shards = weakref.WeakKeyDictionary()
    if loop not in state.loop_async_shards:
        state.loop_async_shards[loop] = state.make_async_shards()
    own: RedisShards[AsyncRedis] = state.loop_async_shards[loop]
    return own


def async_redis_for_job(request: Request, job_id: str) -> AsyncRedis:
    """The app's asyncio client of the Redis that holds `job_id` (its event stream), for waits that hold no thread."""
    return async_shards(request).for_job(job_id)


async def get_job_store(request: Request, redis: Annotated[Redis, Depends(get_redis)]) -> JobStore:
    """The job store over the app's Redis: one per Redis client, made once (it registers its scripts)."""
    state = request.app.state
    if getattr(state, "job_stores", None) is None:
        state.job_stores = {}
    stores: dict[int, JobStore] = state.job_stores
    store = stores.get(id(redis))
    if store is None or store.redis is not redis:
        store = stores[id(redis)] = JobStore.from_settings(redis, get_app_settings(request))
    return store


async def get_results(request: Request) -> ResultImages:
    """The app's view of the image store (presigned URLs or API paths, and the bytes)."""
    results: ResultImages = request.app.state.results
    return results


SettingsDep = Annotated[Settings, Depends(app_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
ShardsDep = Annotated[RedisShards[Redis], Depends(get_shards)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
ResultsDep = Annotated[ResultImages, Depends(get_results)]
