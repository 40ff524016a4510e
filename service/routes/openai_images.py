"""`POST /v1/images/generations`: the OpenAI images API, answered synchronously through the same queue and workers."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import Redis

from core.fields import NumImages, Prompt
from core.jobs import JobStore
from core.schemas import FieldError, GenerateRequest, Job, JobStatus, OutputFormat
from core.settings import Settings
from service.auth import Caller, CallerDep
from service.deps import JobStoreDep, RedisDep, SettingsDep
from service.errors import ApiError, OpenAIErrorResponse
from service.submission import submit
from service.waiting import WaitOutcome, wait_for_end

router = APIRouter(tags=["openai"])

_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")


class ImagesGenerationRequest(BaseModel):
    """The OpenAI request body; fields this service has no use for (quality, style, user, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: Prompt
    n: NumImages = 1
    size: str | None = Field(
        default=None,
        max_length=9,
        description="WxH, each in 64..2048 and a multiple of the model's size step (`GET /models` "
        "capabilities.size_multiple: 8, 16 for flux, sd3, qwen-image); absent or `auto`: the model's default size",
    )
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: OutputFormat = OutputFormat.PNG
    model: str | None = Field(default=None, max_length=100)


class ImageData(BaseModel):
    """One image of the answer."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    """The OpenAI answer."""

    created: int
    data: list[ImageData]
    output_format: OutputFormat


# The native field a problem is about -> the OpenAI parameter that set it (errors on this route name OpenAI's).
_PARAMS = {"width": "size", "height": "size", "width*height": "size", "num_images": "n"}


def _as_params(errors: Sequence[Any]) -> list[Any]:
    """Pydantic errors of the native request with each location's field renamed to the OpenAI parameter."""
    renamed = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if loc and loc[0] in _PARAMS:
            error = {**error, "loc": (_PARAMS[str(loc[0])], *loc[1:])}
        renamed.append(error)
    return renamed


def _generate_request(body: ImagesGenerationRequest) -> GenerateRequest:
    fields: dict[str, Any] = {
        "prompt": body.prompt,
        "num_images": body.n,
        "output_format": body.output_format,
        "model": None if body.model in (None, "dall-e-2", "dall-e-3", "gpt-image-1") else body.model,
    }
    if body.size not in (None, "auto"):  # else width and height stay unset: the model's defaults apply
        match = _SIZE.match(body.size)
        if match is None:
            message = f"expected WxH such as 512x512, or auto; got {body.size!r}"
            raise RequestValidationError([{"loc": ("size",), "msg": message, "type": "size_format"}])
        fields["width"], fields["height"] = int(match.group(1)), int(match.group(2))
    try:
        return GenerateRequest(**fields)
    except ValidationError as exc:
        raise RequestValidationError(_as_params(exc.errors(include_url=False))) from exc


def _submit(request: GenerateRequest, redis: Redis, store: JobStore, settings: Settings, caller: Caller) -> Job:
    """`submit`, with a refused field named as the OpenAI parameter that set it."""
    try:
        return submit(request, redis, store, settings, caller)[0]
    except FieldError as exc:
        if exc.field not in _PARAMS:
            raise
        raise FieldError(_PARAMS[exc.field], exc.message, type=exc.type) from exc
    except RequestValidationError as exc:
        raise RequestValidationError(_as_params(exc.errors())) from exc


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    responses={status: {"model": OpenAIErrorResponse} for status in (400, 401, 413, 415, 422, 429, 499, 500, 503, 504)},
)
async def images_generations(
    body: ImagesGenerationRequest,
    request: Request,
    redis: RedisDep,
    store: JobStoreDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> ImagesResponse:
    """Generate `n` images for `prompt` and answer when they are done (504 after the configured timeout). The wait
    holds no server thread; a client that goes away cancels its job."""
    job = await run_in_threadpool(_submit, _generate_request(body), redis, store, settings, caller)
    timeout = settings.openai_timeout_seconds
    outcome = await wait_for_end(request.app.state.async_redis, job.id, request.receive, timeout)
    if outcome is not WaitOutcome.ENDED:
        await run_in_threadpool(store.cancel, job.id)  # nobody waits for it any more
        if outcome is WaitOutcome.CLIENT_GONE:
            raise ApiError(499, f"the client went away; job {job.id} was canceled", code="client_closed_request")
        raise ApiError(504, f"the images were not ready within {timeout}s (job {job.id})")
    current = await run_in_threadpool(store.get, job.id)
    if current is None or current.status is not JobStatus.SUCCEEDED:
        error = current.error if current is not None else None
        status = 400 if error is not None and error.code == "invalid_request" else 500
        message = error.message if error is not None else f"job {job.id} ended {current.status if current else 'lost'}"
        raise ApiError(status, message, code=error.code if error else "internal")
    if body.response_format == "url":
        base = str(request.base_url).rstrip("/")
        data = [ImageData(url=base + url, revised_prompt=body.prompt) for url in current.images]
    else:
        images = await run_in_threadpool(lambda: [store.get_image(job.id, i) for i in range(len(current.images))])
        data = [
            ImageData(b64_json=base64.b64encode(image or b"").decode(), revised_prompt=body.prompt) for image in images
        ]
    return ImagesResponse(
        created=int(current.timings.created_at.timestamp()), data=data, output_format=body.output_format
    )
