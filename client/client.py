"""A typed Python client of the imagegen API on httpx, sync (`ImagegenClient`) and async (`AsyncImagegenClient`).

Both speak the shared contract: requests are `core.schemas.GenerateRequest`, jobs `core.schemas.Job`, events the
models of `core.events` (parsed with `job_event_adapter`). Every non-2xx answer raises `ImagegenError` carrying the
API's `{"error": {"code", "message", "details"}}` (or OpenAI's `{"error": {"message", "type", "param", "code"}}`);
network failures stay `httpx.TransportError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self, get_args

import httpx
from httpx_sse import ServerSentEvent as RawEvent
from httpx_sse import aconnect_sse, connect_sse

from core.events import TERMINAL_EVENT_TYPES, AnyEvent, JobEvent, job_event_adapter
from core.schemas import GenerateRequest, Job, JobList, JobStatus

DEFAULT_URL = "http://127.0.0.1:8000"
KNOWN_EVENT_TYPES = frozenset(model.model_fields["type"].default for model in get_args(AnyEvent))


class ImagegenError(Exception):
    """An error answer of the API (`status` is its HTTP status) or a job that ended without images (`status` None)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> ImagegenError:
        """The error a non-2xx response describes, in the API's shape or, failing that, from its status."""
        code, message, details = f"http_{response.status_code}", response.reason_phrase or "error", None
        try:
            error = response.json()["error"]
            message = str(error["message"])
            code = str(error.get("code") or error.get("type") or code)
            details = error.get("details")
            if details is None and error.get("param"):  # OpenAI's shape, on the /v1 routes
                details = [{"field": error["param"], "message": message}]
        except (ValueError, KeyError, TypeError):
            text = response.text.strip()
            message = text[:500] if text else message
        retry_after = response.headers.get("retry-after")
        return cls(
            code,
            message,
            status=response.status_code,
            details=details,
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )


class JobFailedError(ImagegenError):
    """The job ended `failed`, `canceled` or `expired`: there are no images to fetch."""

    def __init__(self, job: Job) -> None:
        if job.error is not None:
            code, message = job.error.code, job.error.message
        else:
            code, message = job.status.value, f"job {job.id} ended {job.status.value}"
        super().__init__(code, message)
        self.job = job


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's stream: its stream id (for `Last-Event-ID`) and the typed event."""

    id: str
    event: JobEvent

    @property
    def type(self) -> str:
        """The event's type: `queued`, `started`, `step`, `preview`, `succeeded`, ..."""
        return self.event.type

    @property
    def terminal(self) -> bool:
        """True for the last event of a job (`succeeded`, `failed`, `canceled`, `expired`)."""
        return self.event.type in TERMINAL_EVENT_TYPES


class StreamLostError(ImagegenError):
    """The event stream kept dropping without delivering anything new."""


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "imagegen-client/0.1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _image_request(http: httpx.Client | httpx.AsyncClient, url: str) -> httpx.Request:
    """The GET of an image URL: an API path, or a presigned URL of the server's bucket, which goes without the API
    key (it is signed itself; S3 refuses a second credential, and the key must not reach another host)."""
    request = http.build_request("GET", url)
    base = http.base_url
    if (request.url.scheme, request.url.host, request.url.port) != (base.scheme, base.host, base.port):
        request.headers.pop("Authorization", None)
    return request


def _body(request: GenerateRequest | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a request: validated here first, then only the fields the caller set."""
    model = request if isinstance(request, GenerateRequest) else GenerateRequest.model_validate(dict(request))
    return model.model_dump(mode="json", exclude_unset=True)


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    raise ImagegenError.from_response(response)


def _job(response: httpx.Response) -> Job:
    return Job.model_validate_json(_checked(response).content)


def _submit_headers(idempotency_key: str | None, wait: int | None) -> dict[str, str]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if wait is not None:
        headers["Prefer"] = f"wait={wait}"
    return headers


def _list_params(
    status: JobStatus | list[JobStatus] | None, model: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    """The query of `GET /jobs`; None values left out."""
    statuses = [status] if isinstance(status, JobStatus) else status
    params: dict[str, Any] = {"limit": limit, "status": [JobStatus(s).value for s in statuses or []]}
    params.update({name: value for name, value in (("model", model), ("cursor", cursor)) if value is not None})
    return params


def _parse(raw: RawEvent) -> StreamEvent | None:
    """The typed event of an SSE message; None for a type this client does not know (a newer server's)."""
    if raw.event not in KNOWN_EVENT_TYPES:
        return None
    return StreamEvent(raw.id, job_event_adapter.validate_json(raw.data))


def _sse_headers(last_event_id: str | None) -> dict[str, str]:
    return {"Last-Event-ID": last_event_id} if last_event_id else {}


def _resume_error(job_id: str, drops: int, cause: object) -> StreamLostError:
    return StreamLostError("stream_lost", f"the event stream of job {job_id} dropped {drops} times in a row: {cause}")


class _Resume:
    """Bookkeeping of a resuming stream: the last id seen and how many reconnects made no progress."""

    def __init__(self, last_event_id: str | None, max_reconnects: int, delay: float) -> None:
        self.last_event_id = last_event_id
        self.max_reconnects = max_reconnects
        self.delay = delay
        self.drops = 0
        self.progressed = False

    def seen(self, event: StreamEvent) -> None:
        """Note an event delivered: resume after it."""
        if event.id:
            self.last_event_id = event.id
        self.progressed = True

    def dropped(self) -> float | None:
        """Seconds to wait before reconnecting, or None when it is time to give up."""
        self.drops = 0 if self.progressed else self.drops + 1
        self.progressed = False
        if self.drops > self.max_reconnects:
            return None
        return min(self.delay * 2 ** max(self.drops - 1, 0), 10.0)


def _image_urls(job: Job) -> list[str]:
    if job.status is not JobStatus.SUCCEEDED:
        raise JobFailedError(job)
    return job.images


class ImagegenClient:
    """Synchronous client: `submit`, `get`, `list_jobs`, `wait`, `stream`, `cancel`, `images`, `generate`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        stream_read_timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.stream_read_timeout = stream_read_timeout
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def submit(
        self,
        request: GenerateRequest | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        wait: int | None = None,
    ) -> Job:
        """Queue a job (`POST /generate`) and return it as accepted; with `wait` (seconds, below this client's
        timeout), `Prefer: wait`: the job as it ended if it ended within the wait, else as it is then."""
        headers = _submit_headers(idempotency_key, wait)
        return _job(self._http.post("/generate", json=_body(request), headers=headers))

    def list_jobs(
        self,
        *,
        status: JobStatus | list[JobStatus] | None = None,
        model: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobList:
        """A page of this key's jobs, newest first (`GET /jobs`); pass its `next_cursor` as `cursor` for the next."""
        return JobList.model_validate_json(
            _checked(self._http.get("/jobs", params=_list_params(status, model, limit, cursor))).content
        )

    def get(self, job_id: str) -> Job:
        """The job as it is now (`GET /jobs/{id}`)."""
        return _job(self._http.get(f"/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        """Cancel the job (`DELETE /jobs/{id}`): queued ones end at once, running ones at their next step."""
        return _job(self._http.delete(f"/jobs/{job_id}"))

    def models(self) -> list[dict[str, Any]]:
        """Models that live workers serve (`GET /models`)."""
        return list(_checked(self._http.get("/models")).json())

    def wait(self, job_id: str, timeout: float = 600.0, *, poll_interval: float = 0.25) -> Job:
        """Poll until the job has ended and return it; `TimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.status.is_terminal():
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout}s")
            time.sleep(min(poll_interval, max(deadline - time.monotonic(), 0.0)))

    def stream(
        self,
        job_id: str,
        last_event_id: str | None = None,
        *,
        max_reconnects: int = 5,
        reconnect_delay: float = 0.5,
    ) -> Iterator[StreamEvent]:
        """The job's events from the start (or after `last_event_id`) up to its terminal event, reconnecting with
        `Last-Event-ID` when the connection drops."""
        state = _Resume(last_event_id, max_reconnects, reconnect_delay)
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.stream_read_timeout)
        while True:
            cause: BaseException | None = None
            try:
                headers = _sse_headers(state.last_event_id)
                with connect_sse(self._http, "GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout) as src:
                    if not src.response.is_success:
                        src.response.read()
                        raise ImagegenError.from_response(src.response)
                    for raw in src.iter_sse():
                        event = _parse(raw)
                        if event is None:
                            continue
                        state.seen(event)
                        yield event
                        if event.terminal:
                            return
            except httpx.TransportError as exc:  # a dropped connection, a read timeout, not an event stream
                cause = exc
            delay = state.dropped()
            if delay is None:
                raise _resume_error(job_id, state.drops, cause or "closed before the job ended")
            time.sleep(delay)

    def images(self, job: Job) -> list[bytes]:
        """The bytes of each image of a succeeded job; `JobFailedError` when it did not succeed."""
        return [_checked(self._http.send(_image_request(self._http, url))).content for url in _image_urls(job)]

    def generate(self, request: GenerateRequest | Mapping[str, Any], timeout: float = 600.0) -> tuple[Job, list[bytes]]:
        """Submit, wait and fetch: the finished job and its images (`JobFailedError` when it did not succeed)."""
        job = self.wait(self.submit(request).id, timeout)
        return job, self.images(job)


class AsyncImagegenClient:
    """Asynchronous client with the same methods as `ImagegenClient`, awaitable."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        stream_read_timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.stream_read_timeout = stream_read_timeout
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def submit(
        self,
        request: GenerateRequest | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        wait: int | None = None,
    ) -> Job:
        """Queue a job (`POST /generate`) and return it as accepted; with `wait` (seconds, below this client's
        timeout), `Prefer: wait`: the job as it ended if it ended within the wait, else as it is then."""
        headers = _submit_headers(idempotency_key, wait)
        return _job(await self._http.post("/generate", json=_body(request), headers=headers))

    async def list_jobs(
        self,
        *,
        status: JobStatus | list[JobStatus] | None = None,
        model: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobList:
        """A page of this key's jobs, newest first (`GET /jobs`); pass its `next_cursor` as `cursor` for the next."""
        response = await self._http.get("/jobs", params=_list_params(status, model, limit, cursor))
        return JobList.model_validate_json(_checked(response).content)

    async def get(self, job_id: str) -> Job:
        """The job as it is now (`GET /jobs/{id}`)."""
        return _job(await self._http.get(f"/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> Job:
        """Cancel the job (`DELETE /jobs/{id}`): queued ones end at once, running ones at their next step."""
        return _job(await self._http.delete(f"/jobs/{job_id}"))

    async def models(self) -> list[dict[str, Any]]:
        """Models that live workers serve (`GET /models`)."""
        return list(_checked(await self._http.get("/models")).json())

    async def wait(self, job_id: str, timeout: float = 600.0, *, poll_interval: float = 0.25) -> Job:
        """Poll until the job has ended and return it; `TimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if job.status.is_terminal():
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout}s")
            await asyncio.sleep(min(poll_interval, max(deadline - time.monotonic(), 0.0)))

    async def stream(
        self,
        job_id: str,
        last_event_id: str | None = None,
        *,
        max_reconnects: int = 5,
        reconnect_delay: float = 0.5,
    ) -> AsyncIterator[StreamEvent]:
        """The job's events from the start (or after `last_event_id`) up to its terminal event, reconnecting with
        `Last-Event-ID` when the connection drops."""
        state = _Resume(last_event_id, max_reconnects, reconnect_delay)
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.stream_read_timeout)
        while True:
            cause: BaseException | None = None
            try:
                headers = _sse_headers(state.last_event_id)
                path = f"/jobs/{job_id}/events"
                async with aconnect_sse(self._http, "GET", path, headers=headers, timeout=timeout) as src:
                    if not src.response.is_success:
                        await src.response.aread()
                        raise ImagegenError.from_response(src.response)
                    async for raw in src.aiter_sse():
                        event = _parse(raw)
                        if event is None:
                            continue
                        state.seen(event)
                        yield event
                        if event.terminal:
                            return
            except httpx.TransportError as exc:  # a dropped connection, a read timeout, not an event stream
                cause = exc
            delay = state.dropped()
            if delay is None:
                raise _resume_error(job_id, state.drops, cause or "closed before the job ended")
            await asyncio.sleep(delay)

    async def images(self, job: Job) -> list[bytes]:
        """The bytes of each image of a succeeded job; `JobFailedError` when it did not succeed."""
        return [_checked(await self._http.send(_image_request(self._http, url))).content for url in _image_urls(job)]

    async def generate(
        self, request: GenerateRequest | Mapping[str, Any], timeout: float = 600.0
    ) -> tuple[Job, list[bytes]]:
        """Submit, wait and fetch: the finished job and its images (`JobFailedError` when it did not succeed)."""
        job = await self.wait((await self.submit(request)).id, timeout)
        return job, await self.images(job)
