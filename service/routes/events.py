"""`GET /jobs/{id}/events`: the job's event stream as Server-Sent Events (sse-starlette)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from core import keys
from core.events import TERMINAL_EVENT_TYPES
from core.schemas import ErrorResponse
from service.auth import CallerDep
from service.deps import JobStoreDep, SettingsDep
from service.errors import ApiError
from service.routes.jobs import find_job

router = APIRouter(tags=["jobs"])

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# How long one XREAD waits before the stream checks the job still exists (pings go out meanwhile on their own).
_BLOCK_MS = 5000
_MAX_READ_FAILURES = 10


async def job_events(redis: AsyncRedis, job_id: str, after: str) -> AsyncIterator[ServerSentEvent]:
    """Every event of the job after stream id `after`, then new ones as they come, up to the terminal event."""
    stream = keys.job_events_key(job_id)
    failures = 0
    while True:
        try:
            reply = await redis.xread({stream: after}, block=_BLOCK_MS, count=500)
            failures = 0
        except RedisError:
            # A Redis hiccup must not break the stream: retry; after a while give up, and the client reconnects
            # with Last-Event-ID and misses nothing.
            failures += 1
            if failures > _MAX_READ_FAILURES:
                return
            await asyncio.sleep(0.5)
            continue
        if not reply:
            if not await redis.exists(keys.job_key(job_id)):
                return  # expired while we waited: nothing more will come
            continue
        for entry_id, fields in reply[0][1]:
            after = entry_id.decode()
            event_type = fields[b"type"].decode()
            yield ServerSentEvent(data=fields[b"data"].decode(), event=event_type, id=after)
            if event_type in TERMINAL_EVENT_TYPES:
                return


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
def stream_job_events(
    job_id: str,
    request: Request,
    store: JobStoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-Sent Events of the job from its start (or after `Last-Event-ID`), ending after the terminal event."""
    find_job(store, job_id, caller)
    if last_event_id is not None and not _STREAM_ID.match(last_event_id):
        raise ApiError(422, f"Last-Event-ID: not an event id of this stream: {last_event_id!r}", code="invalid_request")
    return EventSourceResponse(
        job_events(request.app.state.async_redis, job_id, last_event_id or "0-0"),
        ping=settings.sse_ping_seconds,
    )
