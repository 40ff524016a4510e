"""The one reader of a job's event stream (a Redis Stream written by `core.jobs`), sync and async.

`read_events` / `aread_events` read what is there after an id (optionally blocking for new entries); `follow_events`
yields every event after an id as it comes, up to the terminal one, riding out Redis hiccups; `latest_event` finds the
newest event of a type (the A1111 progress route's step preview). The SSE route, the OpenAI and A1111 routes and the
tests read through here; nothing else spells XREAD or XREVRANGE on a job's stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from core import keys
from core.events import TERMINAL_EVENT_TYPES, JobEvent, job_event_adapter

# Entries read by one XREAD.
READ_COUNT = 500
# How long one blocking read waits before `follow_events` checks that the job still exists.
FOLLOW_BLOCK_MS = 5000
# Failed reads in a row after which `follow_events` ends (its caller resumes from the last id it got).
MAX_READ_FAILURES = 10
_RETRY_SECONDS = 0.5


@dataclass(frozen=True)
class StreamEntry:
    """One event of a job's stream: its stream id (an SSE `Last-Event-ID`), type and JSON data."""

    id: str
    type: str
    data: str

    @property
    def terminal(self) -> bool:
        """True for the job's last event (`succeeded`, `failed`, `canceled`, `expired`)."""
        return self.type in TERMINAL_EVENT_TYPES

    def event(self) -> JobEvent:
        """The typed event."""
        return job_event_adapter.validate_json(self.data)


def _entries(reply: Any) -> list[StreamEntry]:
    return [
        StreamEntry(entry_id.decode(), fields[b"type"].decode(), fields[b"data"].decode())
        for _, entries in reply or []
        for entry_id, fields in entries
    ]


def read_events(redis: Redis, job_id: str, after: str = "0-0", block_ms: int | None = None) -> list[StreamEntry]:
    """Events of the job after stream id `after`; waits up to `block_ms` for new ones when there are none."""
    return _entries(redis.xread({keys.job_events_key(job_id): after}, block=block_ms, count=READ_COUNT))


def latest_event(redis: Redis, job_id: str, event_type: str, scan: int = READ_COUNT) -> StreamEntry | None:
    """The job's latest event of `event_type` among its last `scan` events (newest first, by XREVRANGE), or None."""
    reply = redis.xrevrange(keys.job_events_key(job_id), count=scan)
    for entry in _entries([(None, reply)]):
        if entry.type == event_type:
            return entry
    return None


async def aread_events(
    redis: AsyncRedis, job_id: str, after: str = "0-0", block_ms: int | None = None
) -> list[StreamEntry]:
    """`read_events` on the async client (waiting holds no thread)."""
    return _entries(await redis.xread({keys.job_events_key(job_id): after}, block=block_ms, count=READ_COUNT))


async def follow_events(
    redis: AsyncRedis,
    job_id: str,
    after: str = "0-0",
    *,
    block_ms: int = FOLLOW_BLOCK_MS,
    max_failures: int | None = MAX_READ_FAILURES,
) -> AsyncIterator[StreamEntry]:
    """Every event of the job after `after`, then new ones as they come, ending after the terminal event. Ends early
    when the job's record is gone (expired: nothing more will come), or after `max_failures` failed reads in a row
    (None: it rides out an outage of any length); a caller that needs more resumes from the last id it got and misses
    nothing."""
    failures = 0
    while True:
        try:
            entries = await aread_events(redis, job_id, after, block_ms)
            gone = not entries and not await redis.exists(keys.job_key(job_id))
            failures = 0
        except RedisError:
            failures += 1
            if max_failures is not None and failures > max_failures:
                return
            await asyncio.sleep(_RETRY_SECONDS)
            continue
        if gone:
            return
        for entry in entries:
            after = entry.id
            yield entry
            if entry.terminal:
                return
