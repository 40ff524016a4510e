"""`stream: true` on the OpenAI images routes: the job's event stream as OpenAI's image streaming events.

Each `preview` event of the job (the worker's latent preview, every `preview_every` steps) becomes one
`<kind>.partial_image` event, up to `partial_images` of them, then the image comes as `<kind>.completed` (`kind`:
`image_generation` or `image_edit`). A job that fails, is canceled or outlives the deadline ends the stream with an
`error` event in OpenAI's shape, which the `openai` client raises as `APIError`. The wait is an await on the job's
event stream (no thread held); a client that goes away, or a deadline passed, cancels the job.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Literal, cast

import anyio
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel, Field
from redis.asyncio import Redis as AsyncRedis
from sse_starlette import ServerSentEvent

from core.event_stream import StreamEntry, follow_events
from core.events import PreviewEvent
from core.jobs import JobStore
from core.schemas import GenerateRequest, Job, OutputFormat
from service.errors import ApiError, error_body
from service.openai_compat import image_size, result_images, succeeded_job
from service.results import ResultImages

StreamKind = Literal["image_generation", "image_edit"]


class TokenDetails(BaseModel):
    """OpenAI's input token breakdown; this service counts no tokens (all 0)."""

    image_tokens: int = 0
    text_tokens: int = 0


class Usage(BaseModel):
    """OpenAI's token usage of the completed event: 0 throughout (the field is required by OpenAI's types)."""

    input_tokens: int = 0
    input_tokens_details: TokenDetails = Field(default_factory=TokenDetails)
    output_tokens: int = 0
    total_tokens: int = 0


class ImageStreamEvent(BaseModel):
    """The fields a partial and a completed image event share (openai's `image_gen_*_event.py` types)."""

    type: str
    b64_json: str
    background: Literal["opaque"] = "opaque"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    output_format: OutputFormat
    quality: Literal["auto"] = "auto"
    size: str


class PartialImageEvent(ImageStreamEvent):
    """`<kind>.partial_image`: a step preview of the image."""

    partial_image_index: int


class CompletedImageEvent(ImageStreamEvent):
    """`<kind>.completed`: the final image."""

    usage: Usage = Field(default_factory=Usage)


def partial_image(preview: PreviewEvent, request: GenerateRequest) -> str:
    """A latent preview (1/8 of the side, WebP) as base64 at the image's size and in its output format, so that a
    client shows it where the final image will go."""
    image = Image.open(io.BytesIO(base64.b64decode(preview.data))).convert("RGB")
    image = image.resize((request.width, request.height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format=request.output_format.value.upper())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _sse(event: BaseModel) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(), event=getattr(event, "type", None))


def _error_event(exc: ApiError, path: str) -> ServerSentEvent:
    """An `error` event: OpenAI's error body plus `type: error`."""
    body = {"type": "error", **error_body(exc.status, exc.code, exc.message, exc.details, path=path)}
    return ServerSentEvent(data=json.dumps(body), event="error")


async def image_events(
    redis: AsyncRedis,
    store: JobStore,
    results: ResultImages,
    job: Job,
    *,
    kind: StreamKind,
    partial_images: int,
    timeout: float,
    path: str,
) -> AsyncIterator[ServerSentEvent]:
    """The stream of `job`: partial images from its previews, then its image (or an `error` event); cancels the job
    when the stream ends before the job does (client gone, deadline passed)."""
    request = job.request
    events = follow_events(redis, job.id, max_failures=None)  # through a Redis outage: the deadline bounds it
    deadline = anyio.current_time() + timeout
    sent = 0
    ended = False
    try:
        while not ended:
            entry: StreamEntry | None = None
            with anyio.move_on_after(deadline - anyio.current_time()) as waiting:
                entry = await anext(events, None)
            if waiting.cancelled_caught:
                await run_in_threadpool(store.cancel, job.id)  # nobody gets the image now
                ended = True
                message = f"the image was not ready within {timeout:g}s (job {job.id}, canceled)"
                yield _error_event(ApiError(504, message), path)
                return
            if entry is None or entry.terminal:
                ended = True  # a stream without a terminal event: the record expired, `succeeded_job` says so
            elif entry.type == "preview" and sent < partial_images:
                preview = entry.event()
                assert isinstance(preview, PreviewEvent)
                data = await run_in_threadpool(partial_image, preview, request)
                yield _sse(
                    PartialImageEvent(
                        type=f"{kind}.partial_image",
                        b64_json=data,
                        output_format=request.output_format,
                        size=image_size(request),
                        partial_image_index=sent,
                    )
                )
                sent += 1
        try:
            done = await run_in_threadpool(succeeded_job, store, job.id)
        except ApiError as exc:
            yield _error_event(exc, path)
            return
        for image in await run_in_threadpool(result_images, done, results):
            yield _sse(
                CompletedImageEvent(
                    type=f"{kind}.completed",
                    b64_json=base64.b64encode(image).decode("ascii"),
                    output_format=request.output_format,
                    size=image_size(request),
                )
            )
    finally:
        if not ended:  # the client went away (or the server stops): nobody waits for the job any more
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(store.cancel, job.id)
        with anyio.CancelScope(shield=True):
            await cast(AsyncGenerator[StreamEntry, None], events).aclose()  # follow_events is a generator
