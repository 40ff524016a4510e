"""`GET /jobs/{id}/events`: the job's event stream as Server-Sent Events (sse-starlette)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from redis.asyncio import Redis as AsyncRedis
from sse_starlette import EventSourceResponse, ServerSentEvent

from core.event_stream import follow_events
from core.schemas import ErrorResponse
from service.auth import CallerDep
from service.deps import JobStoreDep, SettingsDep
from service.errors import ApiError
from service.routes.jobs import find_job

router = APIRouter(tags=["jobs"])

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


async def job_events(redis: AsyncRedis, job_id: str, after: str) -> AsyncIterator[ServerSentEvent]:
    """Every event of the job after stream id `after`, then new ones as they come, up to the terminal event (a
    stream that ends short of it is resumed by the client with Last-Event-ID, missing nothing)."""
    async for entry in follow_events(redis, job_id, after):
        yield ServerSentEvent(data=entry.data, event=entry.type, id=entry.id)


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
