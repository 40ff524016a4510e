"""Clients made from settings (no Redis needed: nothing connects until a command runs): a plain URL, or the primary
named by Redis Sentinel, with the URL's db, credentials and TLS and the caller's options kept."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.connection import SSLConnection
from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from core.redis_connection import async_redis_client, execute_replicated, redis_client
from core.settings import Settings


def test_without_sentinels_the_url_is_used_as_it_is() -> None:
    settings = Settings(redis_url="rediss://user:pw@cache.example:6380/4")
    client = redis_client(settings, socket_timeout=10, health_check_interval=30)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 4)
    assert (kwargs["username"], kwargs["password"]) == ("user", "pw")
    assert (kwargs["socket_timeout"], kwargs["health_check_interval"]) == (10, 30)
    assert client.connection_pool.connection_class is SSLConnection
    assert not isinstance(client.connection_pool, SentinelConnectionPool)


def test_with_sentinels_the_primary_is_the_one_they_name_with_the_urls_db_and_credentials() -> None:
    settings = Settings(
        redis_url="redis://:secret@ignored.example:1/3?socket_connect_timeout=2",
        redis_sentinels="s1.example:26379, [::1]:26380",  # type: ignore[arg-type]  # as the environment gives it
        redis_sentinel_master="imagegen",
        redis_sentinel_password="sentinel-pw",
    )
    assert settings.redis_sentinels == ["s1.example:26379", "[::1]:26380"]
    client = redis_client(settings, socket_timeout=10, health_check_interval=30)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "imagegen" and pool.is_master
    kwargs = pool.connection_kwargs
    assert "host" not in kwargs and "port" not in kwargs, "the URL's address is not used"
    assert (kwargs["db"], kwargs["password"], kwargs["socket_connect_timeout"]) == (3, "secret", 2)
    assert (kwargs["socket_timeout"], kwargs["health_check_interval"]) == (10, 30)
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"]) for s in sentinels
    ]
    assert addresses == [("s1.example", 26379), ("::1", 26380)]
    assert all(s.connection_pool.connection_kwargs["password"] == "sentinel-pw" for s in sentinels)


def test_async_client_and_tls_through_sentinels() -> None:
    settings = Settings(redis_url="rediss://ignored:1/5", redis_sentinels=["s1:26379"])
    assert redis_client(settings).connection_pool.connection_class is SentinelManagedSSLConnection
    client = async_redis_client(settings, socket_timeout=30)
    pool = client.connection_pool
    assert isinstance(pool, AsyncSentinelPool)
    assert pool.service_name == "mymaster"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["socket_timeout"]) == (5, 30)
    asyncio.run(client.aclose())


def test_a_unix_socket_url_with_sentinels_is_refused() -> None:
    settings = Settings(redis_url="unix:///run/redis.sock", redis_sentinels=["s1:26379"])
    with pytest.raises(ValueError, match="unix"):
        redis_client(settings)


@pytest.mark.parametrize("value", ["s1", "s1:port", ":26379", "s1:0", '["s1:26379", "s2"]'])
def test_sentinel_addresses_must_be_host_and_port(value: str) -> None:
    with pytest.raises(ValidationError, match="host:port"):
        Settings(redis_sentinels=value)  # type: ignore[arg-type]


def test_sentinels_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_REDIS_SENTINELS", '["a:1", "b:2"]')
    assert Settings().redis_sentinels == ["a:1", "b:2"]
    monkeypatch.setenv("IMAGEGEN_REDIS_SENTINELS", "a:1,b:2,")
    assert Settings().redis_sentinels == ["a:1", "b:2"]


def test_waiting_for_replicas_needs_the_pipeline_that_holds_its_connection() -> None:
    plain = async_redis_client(Settings()).pipeline(transaction=True)
    with pytest.raises(TypeError, match="replicated_transaction"):
        asyncio.run(execute_replicated(plain, min_replicas=1, timeout_ms=100))
