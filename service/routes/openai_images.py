"""`POST /v1/images/generations` and `POST /v1/images/edits`: the OpenAI images API through the same queue and
workers, answered when the images are done, or as Server-Sent Events with `stream: true` (service/openai_stream.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from core.jobs import JobStore
from core.schemas import Job
from core.settings import Settings
from service.auth import CallerDep
from service.deps import (
    JobStoreDep,
    ResultsDep,
    SettingsDep,
    async_redis_for_job,
    job_store_for,
)
from service.errors import OpenAIErrorResponse
from service.metrics import SUBMITTED_JOB_STATE
from service.openai_compat import (
    ImagesRequestFields,
    OpenAIImagesResponse,
    generate_request,
    images_response,
    submit_openai,
    succeeded_job,
)
from service.openai_edits import IMAGE_PARTS, MASK_PART, ImagesEditForm, edit_request, read_edit_form
from service.openai_stream import StreamKind, image_events
from service.results import ResultImages
from service.submission import SubmissionClients
from service.waiting import wait_or_cancel

router = APIRouter(tags=["openai"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON; with `stream: true`, Server-Sent Events"},
    **{status: {"model": OpenAIErrorResponse} for status in (400, 401, 413, 415, 422, 429, 499, 500, 503, 504)},
}


class ImagesGenerationRequest(ImagesRequestFields):
    """The OpenAI request body; fields this service has no use for (quality, style, user, ...) are ignored."""


def _edit_body_schema() -> dict[str, Any]:
    """The OpenAPI request body of an edit: the form's text fields, the image and the mask as file parts."""
    schema = ImagesEditForm.model_json_schema(ref_template="#/components/schemas/{model}")
    files = {
        IMAGE_PARTS[0]: {"type": "string", "format": "binary", "description": "The image to edit (one)."},
        MASK_PART: {
            "type": "string",
            "format": "binary",
            "description": "PNG: its fully transparent pixels (alpha 0) mark where to edit (inpainting).",
        },
    }
    properties = files | schema["properties"]
    body = {"type": "object", "properties": properties, "required": ["image", *schema.get("required", [])]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}


async def _answer(
    fields: ImagesRequestFields,
    job: Job,
    request: Request,
    store: JobStore,
    results: ResultImages,
    settings: Settings,
    kind: StreamKind,
) -> Response | OpenAIImagesResponse:
    """The images of a queued job when done, or its stream of events."""
    setattr(request.state, SUBMITTED_JOB_STATE, job.id)  # an error from here on is the job's, not a refusal
    store, job_redis = job_store_for(request, job.id), async_redis_for_job(request, job.id)  # the job's shard
    timeout = settings.openai_timeout_seconds
    if fields.stream:
        events = image_events(
            job_redis,
            store,
            results,
            job,
            kind=kind,
            partial_images=fields.partial_images,
            timeout=timeout,
            path=request.url.path,
        )
        return EventSourceResponse(events, ping=settings.sse_ping_seconds)
    await wait_or_cancel(job_redis, store, job.id, request.receive, timeout)
    done = await run_in_threadpool(succeeded_job, store, job.id)
    return await run_in_threadpool(images_response, done, results, fields.response_format, str(request.base_url))


@router.post("/v1/images/generations", response_model=OpenAIImagesResponse, responses=_RESPONSES)
async def images_generations(
    body: ImagesGenerationRequest,
    request: Request,
    store: JobStoreDep,
    results: ResultsDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> Response | OpenAIImagesResponse:
    """Generate `n` images for `prompt` and answer when they are done (504 after the configured timeout), or stream
    partial images then the image with `stream: true`. The wait holds no server thread; a client that goes away
    cancels its job."""
    job = await submit_openai(
        generate_request(body, settings), SubmissionClients.of(request), store, settings, caller, results
    )
    return await _answer(body, job, request, store, results, settings, "image_generation")


@router.post(
    "/v1/images/edits", response_model=OpenAIImagesResponse, responses=_RESPONSES, openapi_extra=_edit_body_schema()
)
async def images_edits(
    request: Request,
    store: JobStoreDep,
    results: ResultsDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> Response | OpenAIImagesResponse:
    """Edit one image (multipart): img2img over all of it, or inpainting where `mask` is transparent; answers as
    `POST /v1/images/generations` does (`stream: true` included)."""
    form = await read_edit_form(request)
    job = await submit_openai(
        edit_request(form, settings), SubmissionClients.of(request), store, settings, caller, results
    )
    return await _answer(form.fields, job, request, store, results, settings, "image_edit")
