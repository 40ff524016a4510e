"""The one place Redis clients are made from settings: a plain URL, or the primary that Redis Sentinel names.

With `IMAGEGEN_REDIS_SENTINELS` set, the clients are redis-py's `master_for` clients: every new connection asks the
sentinels for the current primary, a connection to a primary that died or was demoted fails with `ConnectionError`
(which the API answers with 503 and the worker rides out), and the next connection goes to the new primary. The
host and port of `IMAGEGEN_REDIS_URL` are then unused; its db index, user name, password, TLS scheme and query
options still apply to the primary.

`execute_replicated` runs a transaction (the API's submission, on the asyncio client) and then `WAIT`s, on the
connection that wrote it, until enough replicas have acknowledged it (`IMAGEGEN_REDIS_MIN_REPLICAS`).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.sentinel import Sentinel

from core.settings import Settings, sentinel_address

# Sentinels answer from memory: a short timeout lets discovery move on to the next one quickly.
SENTINEL_TIMEOUT_SECONDS = 2.0


def _primary_options(settings: Settings) -> dict[str, Any]:
    """What `IMAGEGEN_REDIS_URL` says beside its address (db, credentials, TLS, query options), for `master_for`."""
    options = parse_url(settings.redis_url)
    connection_class = options.pop("connection_class", None)
    if connection_class is UnixDomainSocketConnection:
        raise ValueError("IMAGEGEN_REDIS_URL: a unix:// socket cannot be combined with IMAGEGEN_REDIS_SENTINELS")
    if connection_class is SSLConnection:
        options["ssl"] = True  # SentinelConnectionPool picks its TLS connection class from this flag
    options.pop("host", None)
    options.pop("port", None)
    return options


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if settings.redis_sentinel_password:
        options["password"] = settings.redis_sentinel_password
    return options


def redis_client(settings: Settings, **options: Any) -> Redis:
    """A synchronous client of the primary (a thread-safe connection pool); `options` are redis-py's, e.g.
    `socket_timeout`, `health_check_interval`."""
    if not settings.redis_sentinels:
        return Redis.from_url(settings.redis_url, **options)
    sentinel = Sentinel(
        [sentinel_address(entry) for entry in settings.redis_sentinels],
        sentinel_kwargs=_sentinel_options(settings),
    )
    client: Redis = sentinel.master_for(settings.redis_sentinel_master, **{**_primary_options(settings), **options})
    return client


def async_redis_client(settings: Settings, **options: Any) -> AsyncRedis:
    """The asyncio client of the primary, made as `redis_client` makes the synchronous one."""
    if not settings.redis_sentinels:
        return AsyncRedis.from_url(settings.redis_url, **options)
    sentinel = AsyncSentinel(
        [sentinel_address(entry) for entry in settings.redis_sentinels],
        sentinel_kwargs=_sentinel_options(settings),
    )
    client: AsyncRedis = sentinel.master_for(
        settings.redis_sentinel_master, **{**_primary_options(settings), **options}
    )
    return client


class _HeldPipeline(AsyncPipeline):
    """An asyncio transactional pipeline that keeps its connection after `execute()` until `release()`: `WAIT` counts
    the replicas that acknowledged the writes of the connection it runs on, so it must run on the one that wrote."""

    holding = False

    async def reset(self) -> None:  # type: ignore[override]  # redis-py's own Pipeline.reset has this signature
        if not self.holding:
            await super().reset()  # hands the connection back to the pool
            return
        held, self.connection = self.connection, None  # hidden from Pipeline.reset, which would hand it back
        await super().reset()
        self.connection = held

    async def release(self) -> None:
        self.holding = False
        await self.reset()


def replicated_transaction(redis: AsyncRedis) -> AsyncPipeline:
    """A transactional pipeline of the asyncio client (as `redis.pipeline(transaction=True)`) for
    `execute_replicated`."""
    return _HeldPipeline(redis.connection_pool, redis.response_callbacks, transaction=True, shard_hint=None)


async def execute_replicated(pipe: AsyncPipeline, min_replicas: int, timeout_ms: int) -> tuple[list[Any], int | None]:
    """Execute `pipe`, then, when `min_replicas` > 0, wait up to `timeout_ms` for that many replicas to acknowledge
    it. Returns the transaction's replies and the number of replicas that acknowledged it (None: not asked).

    The WAIT is not retried: a connection lost after EXEC leaves the transaction applied on the primary, and running
    it again would queue the job twice. The error goes up instead (the API answers 503)."""
    if min_replicas <= 0:
        return await pipe.execute(), None
    if not isinstance(pipe, _HeldPipeline):
        raise TypeError("execute_replicated needs a pipeline from replicated_transaction()")
    pipe.holding = True
    try:
        replies = await pipe.execute()
        connection = pipe.connection
        assert connection is not None  # held since execute(): the connection that ran the transaction
        await connection.send_command("WAIT", min_replicas, timeout_ms)
        acknowledged = int(await connection.read_response())
    finally:
        await pipe.release()
    return replies, acknowledged
