"""Routes that answer when a job ends wait without holding a server thread; the OpenAI route gives up its job when
nobody waits any more, `POST /generate` with `Prefer: wait` keeps it (it was accepted, as without the wait).

The real `imagegen api` process, no worker: every job stays queued, so each synchronous request waits for as long as
it (or its client) allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from core import keys
from core.queueing import model_queue
from core.schemas import GenerateRequest
from tests.conftest import TEST_REDIS_URL
from tests.e2e.conftest import stack_env
from tests.e2e.processes import Process, free_port, wait_until

# More waiting clients than the server's thread pool has threads (40 in Starlette/AnyIO).
WAITING_CLIENTS = 60
SERVER_WAIT_SECONDS = 10
LEAVE_AFTER_SECONDS = 2.0


@pytest.fixture
def api(cache_dir: Path, tmp_path: Path, redis_client: Redis) -> Iterator[str]:
    port = free_port()
    env = {**stack_env(cache_dir), "IMAGEGEN_OPENAI_TIMEOUT_SECONDS": str(SERVER_WAIT_SECONDS)}
    process = Process(["api", "--port", str(port)], env, tmp_path / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, "the API")
        yield url
    finally:
        process.stop()


async def _wait_for_images(http: httpx.AsyncClient, read_timeout: float) -> httpx.Response | None:
    body = {"prompt": "a red circle on a blue background", "size": "64x64"}
    try:
        return await http.post("/v1/images/generations", json=body, timeout=httpx.Timeout(5, read=read_timeout))
    except httpx.ReadTimeout:
        return None  # the client gave up and closed its connection


def _statuses(redis: Redis, job_ids: list[str]) -> list[str]:
    return [(redis.hget(keys.job_key(job_id), "status") or b"").decode() for job_id in job_ids]


async def _drive(url: str) -> dict[str, Any]:
    """60 clients wait for images; half leave after 2 s, half wait for the server's deadline. Meanwhile: health and
    submission timings, and the jobs' statuses once the leavers have gone."""
    seen: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=WAITING_CLIENTS + 10)
    redis = Redis.from_url(TEST_REDIS_URL)
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        half = WAITING_CLIENTS // 2
        leavers = [asyncio.ensure_future(_wait_for_images(http, LEAVE_AFTER_SECONDS)) for _ in range(half)]
        stayers = [asyncio.ensure_future(_wait_for_images(http, SERVER_WAIT_SECONDS + 10)) for _ in range(half)]
        queue = model_queue(redis, "tiny")
        await asyncio.to_thread(wait_until, lambda: queue.count >= WAITING_CLIENTS, 30, "every waiting job queued")
        seen["waiting_ids"] = waiting_ids = queue.job_ids
        seen["health_seconds"] = []
        for _ in range(5):
            started = time.perf_counter()
            assert (await http.get("/healthz", timeout=5)).status_code == 200
            seen["health_seconds"].append(time.perf_counter() - started)
        started = time.perf_counter()
        accepted = await http.post("/generate", json={"prompt": "a green square", "width": 64, "height": 64}, timeout=5)
        seen["submit_seconds"] = time.perf_counter() - started
        assert accepted.status_code == 202
        seen["leavers"] = await asyncio.gather(*leavers)
        # The leavers' jobs are canceled as soon as they are gone, long before the server's own deadline.
        seen["after_leaving"] = await asyncio.to_thread(
            wait_until,
            lambda: s if (s := _statuses(redis, waiting_ids)).count("canceled") >= half else None,
            SERVER_WAIT_SECONDS - LEAVE_AFTER_SECONDS - 2,
            "the leavers' jobs canceled",
        )
        seen["stayers"] = await asyncio.gather(*stayers)
        seen["final"] = await asyncio.to_thread(
            wait_until,
            lambda: s if (s := _statuses(redis, waiting_ids)).count("canceled") == WAITING_CLIENTS else None,
            15,
            "every waiting job canceled",
        )
    redis.close()
    return seen


def test_waiting_clients_hold_no_thread_and_their_jobs_end_with_them(api: str, redis_client: Redis) -> None:
    seen = asyncio.run(_drive(api))
    # With 60 requests waiting (more than the thread pool has threads), the API still answers at once.
    assert max(seen["health_seconds"]) < 2.0, seen["health_seconds"]
    assert seen["submit_seconds"] < 2.0
    assert len(seen["waiting_ids"]) == WAITING_CLIENTS
    assert all(response is None for response in seen["leavers"])
    # Right after the leavers left: exactly their half canceled, the stayers' jobs still queued.
    assert sorted(set(seen["after_leaving"])) == ["canceled", "queued"]
    assert seen["after_leaving"].count("queued") == WAITING_CLIENTS // 2
    # The stayers got the server's 504, in the one error shape, and their jobs were canceled too.
    assert {response.status_code for response in seen["stayers"]} == {504}
    assert all("did not end within" in response.json()["error"]["message"] for response in seen["stayers"])
    assert seen["final"] == ["canceled"] * WAITING_CLIENTS
    assert set(model_queue(redis_client, "tiny").job_ids).isdisjoint(seen["waiting_ids"])  # out of the queue too


def test_openai_request_without_size_gets_the_models_default_size(api: str, redis_client: Redis) -> None:
    with pytest.raises(httpx.ReadTimeout):  # no worker: it waits; the client leaves after a moment
        httpx.post(f"{api}/v1/images/generations", json={"prompt": "a red circle"}, timeout=httpx.Timeout(5, read=1))
    records = wait_until(
        lambda: [k for k in redis_client.keys(keys.job_key("*")) if redis_client.type(k) == b"hash"], 10, "job"
    )
    request = GenerateRequest.model_validate_json(redis_client.hget(records[0], "request"))
    defaults = next(m["defaults"] for m in httpx.get(f"{api}/models").json() if m["name"] == "tiny")
    assert (request.width, request.height) == (defaults["width"], defaults["height"])


PREFER_WAIT_SECONDS = 15


async def _drive_prefer_wait(url: str) -> dict[str, Any]:
    """60 clients submit with `Prefer: wait` (no worker: every job stays queued) and 10 more leave after 2 s; once all
    are queued, a plain submission, which needs a pool thread, is answered while they all still wait."""
    seen: dict[str, Any] = {}
    body = {"prompt": "a red circle on a blue background", "width": 64, "height": 64}
    redis = Redis.from_url(TEST_REDIS_URL)
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=WAITING_CLIENTS + 10)) as http:
        headers = {"Prefer": f"wait={PREFER_WAIT_SECONDS}"}
        waiters = [
            asyncio.ensure_future(http.post("/generate", json=body, headers=headers, timeout=PREFER_WAIT_SECONDS + 30))
            for _ in range(WAITING_CLIENTS)
        ]
        leave = httpx.Timeout(5, read=LEAVE_AFTER_SECONDS)
        leavers = [
            asyncio.ensure_future(http.post("/generate", json=body, headers=headers, timeout=leave)) for _ in range(10)
        ]
        queue = model_queue(redis, "tiny")
        await asyncio.to_thread(wait_until, lambda: queue.count >= WAITING_CLIENTS + 10, 30, "every waiting job queued")
        plain = await http.post("/generate", json=body, timeout=PREFER_WAIT_SECONDS + 30)
        seen["plain"] = plain.status_code
        seen["waiters_answered_before_plain"] = sum(task.done() for task in waiters)
        seen["waiters"] = await asyncio.gather(*waiters)
        seen["statuses"] = _statuses(redis, [response.json()["id"] for response in seen["waiters"]])
        seen["leavers"] = await asyncio.gather(*leavers, return_exceptions=True)
        seen["queued"] = _statuses(redis, queue.job_ids)  # the leavers' jobs among them
    redis.close()
    return seen


@pytest.mark.slow  # each waiting request is held for the whole wait
def test_prefer_wait_holds_no_thread_and_keeps_its_jobs(api: str, redis_client: Redis) -> None:
    seen = asyncio.run(_drive_prefer_wait(api))
    # More waiting requests than the thread pool has threads, and a submission still goes through before any of them
    # is answered: a wait that held a thread would have left none for it (nor for the last 20 waiters' submissions).
    assert seen["plain"] == 202
    assert seen["waiters_answered_before_plain"] == 0
    assert {response.status_code for response in seen["waiters"]} == {202}
    assert {response.headers["preference-applied"] for response in seen["waiters"]} == {f"wait={PREFER_WAIT_SECONDS}"}
    assert seen["statuses"] == ["queued"] * WAITING_CLIENTS  # not done in time, and kept: no one cancels them
    assert all(isinstance(leaver, httpx.ReadTimeout) for leaver in seen["leavers"])
    assert seen["queued"] == ["queued"] * (WAITING_CLIENTS + 10 + 1)  # those who left keep their jobs too
