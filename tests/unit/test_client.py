"""The Python client against scripted HTTP answers: error shape, API key, typed events, resuming a dropped stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from client import (
    AsyncImagegenClient,
    ImagegenClient,
    ImagegenError,
    JobFailedError,
    StreamEvent,
    StreamLostError,
)
from core.events import QueuedEvent, StartedEvent, StepEvent, SucceededEvent
from core.schemas import Job

JOB_ID = "0123456789abcdef0123456789abcdef"
EVENTS = [
    ("1-0", "queued", {"type": "queued", "model": "tiny"}),
    ("2-0", "started", {"type": "started", "worker_id": "w", "total": 2}),
    (
        "3-0",
        "step",
        {"type": "step", "step": 1, "total": 2, "step_seconds": 0.1, "elapsed_seconds": 0.1, "eta_seconds": 0.1},
    ),
    (
        "4-0",
        "step",
        {"type": "step", "step": 2, "total": 2, "step_seconds": 0.1, "elapsed_seconds": 0.2, "eta_seconds": 0},
    ),
    ("5-0", "succeeded", {"type": "succeeded", "images": [f"/jobs/{JOB_ID}/images/0"]}),
]


def _job(status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "status": status,
        "model": "tiny",
        "request": {"prompt": "x", "seed": 7},
        "seed": 7,
        "progress": {"step": 2, "total": 2},
        "timings": {"created_at": "2026-11-27T16:42:24Z"},
        "images": [f"/jobs/{JOB_ID}/images/0"] if status == "succeeded" else [],
        **extra,
    }


def _sse(events: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    return b"".join(f"id: {eid}\nevent: {etype}\ndata: {json.dumps(data)}\n\n".encode() for eid, etype, data in events)


class _Dropping(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that sends `data`, then fails like a dropped connection (when `drop`)."""

    def __init__(self, data: bytes, drop: bool) -> None:
        self.data = data
        self.drop = drop

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        if self.drop:
            raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        if self.drop:
            raise httpx.ReadError("connection reset by peer")


def _stream_server(cut_after: int, seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """Answers event-stream requests: the first connection drops after `cut_after` events; later ones resume."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        after = request.headers.get("last-event-id")
        start = 0 if after is None else [e[0] for e in EVENTS].index(after) + 1
        first = len(seen) == 1
        chunk = EVENTS[start:cut_after] if first else EVENTS[start:]
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Dropping(_sse(chunk), drop=first)
        )

    return handle


def test_stream_resumes_with_last_event_id_after_a_drop() -> None:
    seen: list[httpx.Request] = []
    client = ImagegenClient("http://api", transport=httpx.MockTransport(_stream_server(2, seen)))
    events = list(client.stream(JOB_ID, reconnect_delay=0))
    assert [e.id for e in events] == [e[0] for e in EVENTS]
    assert [type(e.event) for e in events] == [QueuedEvent, StartedEvent, StepEvent, StepEvent, SucceededEvent]
    assert isinstance(events[1].event, StartedEvent) and events[1].event.total == 2
    assert events[-1].terminal and not events[0].terminal
    assert "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "2-0"
    assert seen[0].url.path == f"/jobs/{JOB_ID}/events"
    assert seen[0].headers["accept"] == "text/event-stream"


def test_stream_starts_after_a_given_last_event_id() -> None:
    seen: list[httpx.Request] = []
    client = ImagegenClient("http://api", transport=httpx.MockTransport(_stream_server(len(EVENTS), seen)))
    events = list(client.stream(JOB_ID, last_event_id="3-0"))
    assert [e.id for e in events] == ["4-0", "5-0"]
    assert seen[0].headers["last-event-id"] == "3-0"


def test_async_stream_resumes_with_last_event_id_after_a_drop() -> None:
    seen: list[httpx.Request] = []

    async def collect() -> list[StreamEvent]:
        async with AsyncImagegenClient("http://api", transport=httpx.MockTransport(_stream_server(3, seen))) as client:
            return [event async for event in client.stream(JOB_ID, reconnect_delay=0)]

    events = asyncio.run(collect())
    assert [e.id for e in events] == [e[0] for e in EVENTS]
    assert seen[1].headers["last-event-id"] == "3-0"


def test_stream_gives_up_when_reconnects_bring_nothing_new() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Dropping(b"", drop=True))

    client = ImagegenClient("http://api", transport=httpx.MockTransport(handle))
    with pytest.raises(StreamLostError) as caught:
        list(client.stream(JOB_ID, max_reconnects=2, reconnect_delay=0))
    assert caught.value.code == "stream_lost"
    assert "connection reset" in caught.value.message


def test_stream_skips_event_types_it_does_not_know() -> None:
    body = _sse([("1-0", "hologram", {"type": "hologram"}), EVENTS[-1]])

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    events = list(ImagegenClient("http://api", transport=httpx.MockTransport(handle)).stream(JOB_ID))
    assert [e.type for e in events] == ["succeeded"]


def test_error_answers_raise_with_the_apis_code_message_and_details() -> None:
    details = [{"field": "steps", "message": "too many", "type": "less_than_equal"}]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/generate":
            error = {"code": "invalid_request", "message": "steps: too many", "details": details}
            return httpx.Response(422, json={"error": error})
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no job", "details": None}})
        if request.method == "DELETE":
            error = {"code": "rate_limited", "message": "slow down", "details": None}
            return httpx.Response(429, json={"error": error}, headers={"Retry-After": "7"})
        return httpx.Response(502, text="<html>bad gateway</html>")

    client = ImagegenClient("http://api", transport=httpx.MockTransport(handle))
    with pytest.raises(ImagegenError) as refused:
        client.submit({"prompt": "x", "steps": 20})
    assert (refused.value.status, refused.value.code, refused.value.details) == (422, "invalid_request", details)
    assert str(refused.value) == "invalid_request: steps: too many"
    with pytest.raises(ImagegenError) as missing:
        list(client.stream(JOB_ID))
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(ImagegenError) as limited:
        client.cancel(JOB_ID)
    assert (limited.value.code, limited.value.retry_after) == ("rate_limited", 7.0)
    with pytest.raises(ImagegenError) as gateway:
        client.get(JOB_ID)
    assert (gateway.value.status, gateway.value.code, gateway.value.message) == (
        502,
        "http_502",
        "<html>bad gateway</html>",
    )


def test_api_key_is_sent_as_bearer_and_only_set_fields_are_posted() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=_job("queued"))

    client = ImagegenClient("http://api", api_key="sk-test", transport=httpx.MockTransport(handle))
    job = client.submit({"prompt": "x", "seed": 7}, idempotency_key="once")
    assert job.id == JOB_ID and job.status.value == "queued"
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert seen[0].headers["idempotency-key"] == "once"
    assert json.loads(seen[0].content) == {"prompt": "x", "seed": 7}
    assert "authorization" not in ImagegenClient("http://api")._http.headers


def test_images_of_a_job_that_did_not_succeed_raise_job_failed() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(f"/jobs/{JOB_ID}/images/"):
            return httpx.Response(200, content=b"PNG!", headers={"content-type": "image/png"})
        return httpx.Response(200, json=_job())

    client = ImagegenClient("http://api", transport=httpx.MockTransport(handle))
    assert client.images(client.get(JOB_ID)) == [b"PNG!"]
    failed = Job.model_validate(_job("failed", error={"code": "out_of_memory", "message": "too big"}))
    with pytest.raises(JobFailedError) as caught:
        client.images(failed)
    assert (caught.value.code, caught.value.message, caught.value.job) == ("out_of_memory", "too big", failed)


def test_async_wait_polls_until_the_job_ends() -> None:
    statuses = iter(["queued", "running", "succeeded"])

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_job(next(statuses)))

    async def wait() -> str:
        async with AsyncImagegenClient("http://api", transport=httpx.MockTransport(handle)) as client:
            return (await client.wait(JOB_ID, timeout=5, poll_interval=0)).status.value

    assert asyncio.run(wait()) == "succeeded"


def test_wait_times_out() -> None:
    client = ImagegenClient(
        "http://api", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=_job("queued")))
    )
    with pytest.raises(TimeoutError):
        client.wait(JOB_ID, timeout=0.05, poll_interval=0.01)


def test_images_go_to_a_presigned_url_without_the_api_key() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[str(request.url)] = request.headers.get("authorization")
        return httpx.Response(200, content=b"png")

    job = Job.model_validate(
        {
            "id": "j1",
            "status": "succeeded",
            "model": "tiny",
            "request": {"prompt": "x", "seed": 1},
            "seed": 1,
            "progress": {"step": 2, "total": 2},
            "timings": {"created_at": "2026-01-01T00:00:00Z"},
            "images": ["/jobs/j1/images/0", "https://bucket.s3.amazonaws.com/jobs/j1/a1/1.png?X-Amz-Signature=abc"],
        }
    )
    with ImagegenClient("http://api.test", api_key="secret", transport=httpx.MockTransport(handler)) as client:
        assert client.images(job) == [b"png", b"png"]
    assert seen == {
        "http://api.test/jobs/j1/images/0": "Bearer secret",  # the API's own path: with the key
        "https://bucket.s3.amazonaws.com/jobs/j1/a1/1.png?X-Amz-Signature=abc": None,  # signed itself: without it
    }
