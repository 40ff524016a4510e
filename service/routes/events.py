"""`GET /jobs/{id}/events`: the job's event stream as Server-Sent Events (sse-starlette)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from redis.asyncio import Redis as AsyncRedis
from sse_starlette import EventSourceResponse, ServerSentEvent

from core.event_stream import follow_events
from core.jobs import JobStore
from core.schemas import ErrorResponse
from service.auth import CallerDep
from service.deps import JobStoreDep, ResultsDep, SettingsDep, async_redis_for_job
from service.errors import ApiError
from service.results import ResultImages
from service.routes.jobs import find_job

router = APIRouter(tags=["jobs"])

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


async def job_events(
    redis: AsyncRedis, job_id: str, after: str, results: ResultImages | None = None, store: JobStore | None = None
) -> AsyncIterator[ServerSentEvent]:
    """Every event of the job after stream id `after`, then new ones as they come, up to the terminal event (a
    stream that ends short of it is resumed by the client with Last-Event-ID, missing nothing). With `results`
    presigning, the `succeeded` event's image URLs are made as it is sent."""
    async for entry in follow_events(redis, job_id, after):
        data = entry.data
        if entry.type == "succeeded" and results is not None and results.presigned and store is not None:
            data = results.event_data(data, await run_in_threadpool(store.get, job_id))
        yield ServerSentEvent(data=data, event=entry.type, id=entry.id)


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def stream_job_events(
    job_id: str,
    request: Request,
    store: JobStoreDep,
    settings: SettingsDep,
    results: ResultsDep,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-Sent Events of the job from its start (or after `Last-Event-ID`), ending after the terminal event."""
    await run_in_threadpool(find_job, store, job_id, caller)
    if last_event_id is not None and not _STREAM_ID.match(last_event_id):
        raise ApiError(422, f"Last-Event-ID: not an event id of this stream: {last_event_id!r}", code="invalid_request")
    return EventSourceResponse(
        job_events(async_redis_for_job(request, job_id), job_id, last_event_id or "0-0", results, store),
        ping=settings.sse_ping_seconds,
    )
