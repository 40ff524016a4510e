"""The listing index of jobs (`GET /jobs`): per API key and for all jobs, sorted sets of job ids scored by creation
time, written in the transaction that creates the job and read newest first, a page at a time, with a cursor.

An index never outgrows the records: a member whose record has expired is skipped and removed when a listing meets
it, and writes trim (once a minute per index and process) the members older than the longest a record can live, so an
index nobody lists stays bounded too (and the key itself expires when its owner stops submitting).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline

from core import keys

# Index entries one page request examines at most (records read, filtered out or expired): a selective filter over a
# long history answers a short page with a `next_cursor` rather than reading the whole index in one request.
SCAN_BUDGET = 1000
_CHUNK = 100
# How often a process trims and re-expires an index it writes to; when it next does, per index key (monotonic clock).
TRIM_EVERY_SECONDS = 60
_TRIM_DUE_MAX = 10_000
_trim_due: dict[str, float] = {}


def index_keys(owner: str | None) -> list[str]:
    """The indexes a job of `owner` (None: created with auth off) belongs to: every job's, and its key's own."""
    return [keys.all_jobs_key(), *([keys.owner_jobs_key(owner)] if owner else [])]


def add_to_index(
    pipe: Pipeline | AsyncPipeline, job_id: str, owner: str | None, created_at: float, keep_seconds: int
) -> None:
    """Queue on `pipe` (the job's creating transaction) the job's entries in its indexes; at most once a
    `TRIM_EVERY_SECONDS` per index and process, also trim its entries older than `keep_seconds` (longer than any record
    lives) and expire it should it get no new job for that long (two commands a job fewer than doing it each time)."""
    now = time.monotonic()
    for key in index_keys(owner):
        pipe.zadd(key, {job_id: created_at})
        if now >= _trim_due.get(key, 0.0):
            pipe.zremrangebyscore(key, "-inf", f"({created_at - keep_seconds!r}")
            pipe.expire(key, keep_seconds + TRIM_EVERY_SECONDS)
            if len(_trim_due) >= _TRIM_DUE_MAX:  # one entry per API key: keep the map bounded
                _trim_due.clear()
            _trim_due[key] = now + TRIM_EVERY_SECONDS


@dataclass(frozen=True)
class Position:
    """Where a listing stopped: the creation time and id of the last index entry it examined."""

    created_at: float
    job_id: str

    def encode(self) -> str:
        """The opaque cursor a client sends back as `cursor`."""
        return base64.urlsafe_b64encode(f"{self.created_at!r} {self.job_id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        """The position of a cursor `encode` made; ValueError for anything else."""
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError("not a cursor this API returned") from exc
        created, _, job_id = text.partition(" ")
        try:
            created_at = float(created)
        except ValueError as exc:
            raise ValueError("not a cursor this API returned") from exc
        if not job_id or len(job_id) > 64 or created_at != created_at:  # NaN never equals itself
            raise ValueError("not a cursor this API returned")
        return cls(created_at, job_id)


def _positions(reply: Any) -> list[Position]:
    """A ZRANGE ... WITHSCORES reply as positions."""
    return [Position(float(score), member.decode()) for member, score in reply]


async def _entries_after(redis: AsyncRedis, key: str, after: Position | None, count: int) -> list[Position]:
    """Up to `count` entries of the index older than `after` (all when None), newest first; entries created in the
    same instant come in descending id order, so (created_at, id) orders them all."""
    if after is None:
        reply = await redis.zrange(key, "+inf", "-inf", desc=True, byscore=True, offset=0, num=count, withscores=True)
        return _positions(reply)
    pipe = redis.pipeline(transaction=False)
    bound = repr(after.created_at)
    pipe.zrange(key, bound, bound, desc=True, byscore=True, withscores=True)  # the same instant: a few at most
    pipe.zrange(key, f"({bound}", "-inf", desc=True, byscore=True, offset=0, num=count, withscores=True)
    same, older = await pipe.execute()
    tied = [entry for entry in _positions(same) if entry.job_id < after.job_id]
    return (tied + _positions(older))[:count]


Found = tuple[Position, dict[str, str]]


async def _page_on(
    redis: AsyncRedis,
    key: str,
    *,
    wanted: Callable[[dict[str, str]], bool],
    limit: int,
    after: Position | None,
) -> tuple[list[Found], Position | None]:
    """The next `limit` jobs of the index `key` on one Redis after `after` whose record (field -> value) `wanted`
    accepts, newest first, each with its index position; and the last position examined (None: the index has no
    more). Expired entries are dropped on the way. At most `SCAN_BUDGET` entries are examined, so a page may be short
    while more remain."""
    found: list[Found] = []
    position = after
    examined = 0
    while examined < SCAN_BUDGET:
        asked = min(_CHUNK, SCAN_BUDGET - examined)
        entries = await _entries_after(redis, key, position, asked)
        if not entries:
            return found, None
        pipe = redis.pipeline(transaction=False)
        for entry in entries:
            pipe.hgetall(keys.job_key(entry.job_id))
        records = await pipe.execute()
        gone = []
        stopped_at = len(entries)
        for index, (entry, raw) in enumerate(zip(entries, records, strict=True)):
            examined += 1
            position = entry
            if not raw:
                gone.append(entry.job_id)
            elif wanted(record := {name.decode(): value.decode() for name, value in raw.items()}):
                found.append((entry, record))
                if len(found) == limit:
                    stopped_at = index + 1
                    break
        if gone:
            await redis.zrem(key, *gone)
        if len(entries) < asked and stopped_at == len(entries):  # a short read: the index ends here
            return found, None
        if len(found) == limit:
            return found, position
    return found, position


def _order(position: Position) -> tuple[float, str]:
    return position.created_at, position.job_id


async def read_page(
    clients: Sequence[AsyncRedis],
    key: str,
    *,
    wanted: Callable[[dict[str, str]], bool],
    limit: int,
    after: Position | None,
) -> tuple[list[dict[str, str]], Position | None]:
    """`_page_on` over every Redis of the deployment (queues sharded by model keep each job's index entry with its
    record, on its model's Redis): the records of the next `limit` wanted jobs of all of them, newest first, and the
    cursor position of the next page (None: no more anywhere)."""
    pages = await asyncio.gather(
        *(_page_on(client, key, wanted=wanted, limit=limit, after=after) for client in clients)
    )
    merged = sorted((item for found, _ in pages for item in found), key=lambda item: _order(item[0]), reverse=True)
    # Everything at or above the newest point where some Redis stopped short is known on every Redis; below it, one
    # of them may hold jobs not read yet, so the page ends there and the next one starts from it.
    frontiers = [stop for _, stop in pages if stop is not None]
    frontier = max(frontiers, key=_order) if frontiers else None
    known = [item for item in merged if frontier is None or _order(item[0]) >= _order(frontier)]
    if len(known) > limit:
        return [record for _, record in known[:limit]], known[limit - 1][0]
    return [record for _, record in known], frontier
