"""Redis high availability on servers of the test's own: clients made from settings find the primary through a real
sentinel and follow a failover; a submission `WAIT`s for its replicas and answers 503 `not_replicated` when they do
not acknowledge it in time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from core import keys
from core.queueing import model_queue
from core.redis_connection import async_redis_client, redis_client
from core.settings import Settings
from service.app import create_app
from tests.redis_servers import MASTER_NAME, RedisProcesses, needs_sentinel

pytestmark = needs_sentinel

REQUEST = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2}


def _through_sentinel(settings: Settings, sentinel: int, **update: Any) -> Settings:
    # The URL's host and port are unused with sentinels (nothing listens on port 1); its db index still applies.
    return settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/2", "redis_sentinels": [f"127.0.0.1:{sentinel}"], **update}
    )


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _fail_over(redis_processes: RedisProcesses, sentinel: int, old_primary: int, new_primary: int) -> None:
    Redis(port=sentinel).sentinel_failover(MASTER_NAME)  # a forced failover: no agreement or down time needed
    _until(lambda: redis_processes.primary_port(sentinel) == new_primary, 30, "the sentinel to name the new primary")
    _until(lambda: Redis(port=new_primary).info("replication")["role"] == "master", 30, "the promotion")
    # Until the old primary is made a replica it still takes writes from connections that were open to it (and loses
    # them at its resync): the window docs/reliability.md describes. The sentinel demotes it some 10 s later; do now
    # what it would do.
    Redis(port=old_primary).replicaof("127.0.0.1", new_primary)


def test_clients_made_from_settings_find_the_primary_through_sentinel_and_follow_a_failover(
    redis_processes: RedisProcesses, settings: Settings
) -> None:
    primary = redis_processes.server()
    replica = redis_processes.server(replica_of=primary)
    sentinel = redis_processes.sentinel(primary, quorum=1)
    redis_processes.wait_replicas_known([sentinel], replicas=1)
    settings = _through_sentinel(settings, sentinel)
    client = redis_client(settings, socket_timeout=5, health_check_interval=30)

    async def write_async(value: str) -> None:
        async_client = async_redis_client(settings, socket_timeout=5)
        try:
            for _ in range(50):  # the first command after a failover may fail (503 in the API); the next goes through
                try:
                    await async_client.set("async", value)
                    return
                except RedisConnectionError:
                    await asyncio.sleep(0.1)
            raise AssertionError("no write went through in 5 s")
        finally:
            await async_client.aclose()

    def write(value: str) -> None:
        for _ in range(50):
            try:
                client.set("sync", value)
                return
            except RedisConnectionError:
                time.sleep(0.1)
        raise AssertionError("no write went through in 5 s")

    write("before")
    asyncio.run(write_async("before"))
    on_primary = Redis(port=primary, db=2)
    assert on_primary.mget("sync", "async") == [b"before", b"before"], "db 2 of the URL, on the primary"

    _fail_over(redis_processes, sentinel, primary, replica)
    write("after")  # the client's pooled connections still point at the old primary, now read-only
    asyncio.run(write_async("after"))
    assert Redis(port=replica, db=2).mget("sync", "async") == [b"after", b"after"], "written to the new primary"
    client.close()


def test_a_submission_waits_for_its_replica_and_is_503_not_replicated_when_none_acknowledges(
    redis_processes: RedisProcesses, settings: Settings
) -> None:
    primary = redis_processes.server()
    replica = redis_processes.server(replica_of=primary)
    sentinel = redis_processes.sentinel(primary, quorum=1)
    settings = _through_sentinel(settings, sentinel, redis_min_replicas=1, redis_replica_timeout_ms=300)
    # In its lifespan the app runs one event loop, and its asyncio clients (what a submission waits on) with it.
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        accepted = api.post("/generate", json=REQUEST)
        assert accepted.status_code == 202, accepted.text
        assert Redis(port=replica, db=2).exists(keys.job_key(accepted.json()["id"])), "on the replica before 202"

        # A stopped replica keeps its link open but acknowledges nothing: WAIT on the connection that wrote the job
        # times out. (On any other connection WAIT would count it at once: that connection wrote nothing.)
        redis_processes.pause(replica)
        try:
            refused = api.post("/generate", json=REQUEST)
        finally:
            redis_processes.resume(replica)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "not_replicated"
        [detail] = error["details"]
        job_id = detail["job_id"]
        assert (detail["replicas_acknowledged"], detail["replicas_required"]) == (0, 1)
        assert "queued on the Redis primary" in error["message"]
        # What the 503 says: the job is queued on the primary (and reaches the replica once it is back).
        assert api.get(f"/jobs/{job_id}").json()["status"] == "queued"
        assert job_id in model_queue(Redis(port=primary, db=2), "tiny").job_ids
        _until(lambda: Redis(port=replica, db=2).exists(keys.job_key(job_id)), 10, "the replica to catch up")

        assert api.post("/generate", json=REQUEST).status_code == 202
        held = api.app.state.async_redis.connection_pool._in_use_connections
        assert not held, "the held connection went back to the pool"


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_submissions_give_their_connection_back_to_the_pool(
    min_replicas: int, redis_processes: RedisProcesses, settings: Settings
) -> None:
    primary = redis_processes.server()
    redis_processes.server(replica_of=primary)
    settings = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{primary}/0", "redis_min_replicas": min_replicas}
    )
    # In its lifespan the app runs one event loop, and its asyncio clients (what a submission waits on) with it.
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        for _ in range(20):
            assert api.post("/generate", json=REQUEST).status_code == 202
        pool = api.app.state.async_redis.connection_pool
        assert not pool._in_use_connections and len(pool._available_connections) == 1, "one connection, reused"


PRESTOP = Path(__file__).resolve().parents[2] / "deploy/k8s/components/redis-sentinel/scripts/prestop.sh"


def test_the_kubernetes_prestop_hands_the_primary_over_without_losing_an_acknowledged_write(
    redis_processes: RedisProcesses, settings: Settings
) -> None:
    """deploy/k8s/components/redis-sentinel's preStop, run on loopback: a stopping primary pauses writes, has a
    sentinel promote its replica and follows it; a client writing all along loses no acknowledged write."""
    primary = redis_processes.server()
    # Not waiting for the replica to be streamed writes: the hand-over must wait until it has every one.
    replica = redis_processes.server(replica_of=primary, streamed=False)
    sentinel = redis_processes.sentinel(primary, quorum=1)
    redis_processes.wait_replicas_known([sentinel], replicas=1)
    client = redis_client(_through_sentinel(settings, sentinel), socket_timeout=5)
    acknowledged: list[int] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            try:
                acknowledged.append(int(client.incr("counter")))
                time.sleep(0.002)
            except RedisConnectionError:
                time.sleep(0.05)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    _until(lambda: len(acknowledged) >= 5, 10, "writes before the hand-over")
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_SELF": "127.0.0.1",
        "REDIS_PORT": str(primary),
        "REDIS_SENTINELS": f"127.0.0.1:{sentinel}",
    }
    subprocess.run(["sh", str(PRESTOP)], env=env, check=True, timeout=60)
    assert Redis(port=replica).info("replication")["role"] == "master"
    assert Redis(port=primary).info("replication")["role"] == "slave"
    handed_over = len(acknowledged)
    _until(lambda: len(acknowledged) >= handed_over + 50, 10, "writes on the new primary")
    stop.set()
    writer.join(timeout=10)
    # INCR answers are the counter's values: every acknowledged one is on the new primary, none lost or repeated.
    assert int(Redis(port=replica, db=2).get("counter")) == max(acknowledged) == len(acknowledged)
    assert acknowledged == sorted(set(acknowledged))
    client.close()
