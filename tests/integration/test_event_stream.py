"""The one reader of a job's event stream (core/event_stream.py), sync and async, on the real Redis."""

from __future__ import annotations

import asyncio

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.event_stream import aread_events, follow_events, read_events
from core.events import StepEvent
from core.jobs import JobStore
from core.schemas import GenerateRequest
from tests.conftest import TEST_REDIS_URL


def _job(store: JobStore, job_id: str) -> None:
    store.create(job_id, "tiny", GenerateRequest(prompt="x", seed=1, width=64, height=64, steps=3))


def test_sync_and_async_reads_agree_and_resume_after_an_id(store: JobStore) -> None:
    _job(store, "j")
    store.claim("j", "w", 3)
    step = StepEvent(step=1, total=3, step_seconds=0.1, elapsed_seconds=0.1, eta_seconds=0.2)
    store.report_step("j", 1, 3, 0.2, step)
    entries = read_events(store.redis, "j")
    assert [e.type for e in entries] == ["queued", "started", "step"]
    assert entries[2].event() == step and not entries[2].terminal
    assert read_events(store.redis, "j", after=entries[0].id) == entries[1:]

    async def read_async() -> list:
        redis = AsyncRedis.from_url(TEST_REDIS_URL)
        try:
            return await aread_events(redis, "j")
        finally:
            await redis.aclose()

    assert asyncio.run(read_async()) == entries


def test_follow_waits_for_new_events_and_ends_after_the_terminal_one(store: JobStore) -> None:
    _job(store, "j")

    async def follow() -> list[str]:
        redis = AsyncRedis.from_url(TEST_REDIS_URL)
        try:
            seen = []
            async for entry in follow_events(redis, "j", block_ms=100):
                seen.append(entry.type)
                if entry.type == "queued":  # what comes next is written while we wait
                    await asyncio.to_thread(store.claim, "j", "w", 3)
                elif entry.type == "started":
                    await asyncio.to_thread(store.mark_succeeded, "j", [b"png"])
            return seen
        finally:
            await redis.aclose()

    assert asyncio.run(follow()) == ["queued", "started", "succeeded"]


def test_follow_ends_when_the_job_is_gone(store: JobStore, redis_client: Redis) -> None:
    _job(store, "j")
    redis_client.delete(keys.job_key("j"))  # expired: no terminal event will ever come

    async def follow() -> list[str]:
        redis = AsyncRedis.from_url(TEST_REDIS_URL)
        try:
            return [entry.type async for entry in follow_events(redis, "j", block_ms=100)]
        finally:
            await redis.aclose()

    assert asyncio.run(asyncio.wait_for(follow(), timeout=10)) == ["queued"]
