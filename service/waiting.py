"""Waiting for a job to end inside a request, holding no thread: the wait is an await on the job's event stream,
raced against the deadline and against the client going away."""

from __future__ import annotations

import asyncio
from enum import StrEnum

from fastapi.concurrency import run_in_threadpool
from redis.asyncio import Redis as AsyncRedis
from starlette.types import Receive

from core.event_stream import follow_events
from core.jobs import JobStore
from service.errors import ApiError


class WaitOutcome(StrEnum):
    """How a wait for a job's end ended."""

    ENDED = "ended"  # the terminal event came (or the job's record is gone)
    TIMED_OUT = "timed_out"
    CLIENT_GONE = "client_gone"  # the HTTP client disconnected first


async def _job_ends(redis: AsyncRedis, job_id: str) -> None:
    # Through a Redis outage too: the wait's own deadline bounds it.
    async for entry in follow_events(redis, job_id, max_failures=None):
        if entry.terminal:
            return
    # The stream ended without a terminal event: the job's record expired, nothing more will come.


async def _client_leaves(receive: Receive) -> None:
    # Once the body is read, the next ASGI message is `http.disconnect`: it comes when the client goes away.
    while (await receive())["type"] != "http.disconnect":
        pass


async def wait_for_end(redis: AsyncRedis, job_id: str, receive: Receive, timeout: float) -> WaitOutcome:
    """Wait until the job has ended, `timeout` seconds have passed, or the client has gone, whichever comes first."""
    ends = asyncio.ensure_future(_job_ends(redis, job_id))
    leaves = asyncio.ensure_future(_client_leaves(receive))
    try:
        done, _ = await asyncio.wait({ends, leaves}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ends, leaves):
            task.cancel()
    if ends in done:
        ends.result()
        return WaitOutcome.ENDED
    return WaitOutcome.CLIENT_GONE if leaves in done else WaitOutcome.TIMED_OUT


async def wait_or_cancel(redis: AsyncRedis, store: JobStore, job_id: str, receive: Receive, timeout: float) -> None:
    """Wait for the job to end, for a route that answers with its result: when the client goes away (499) or the
    time is up (504), nobody waits for the job any more, so it is canceled and the ApiError raised."""
    outcome = await wait_for_end(redis, job_id, receive, timeout)
    if outcome is WaitOutcome.ENDED:
        return
    await run_in_threadpool(store.cancel, job_id)
    if outcome is WaitOutcome.CLIENT_GONE:
        raise ApiError(499, f"the client went away; job {job_id} was canceled", code="client_closed_request")
    raise ApiError(504, f"job {job_id} did not end within {timeout:g}s; it was canceled")
