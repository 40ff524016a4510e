"""`POST /v1/images/generations`: the OpenAI images API, answered synchronously through the same queue and workers."""

from __future__ import annotations

import base64
import re
import time
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from core.queueing import model_queue
from core.schemas import ErrorResponse, GenerateRequest, JobStatus, OutputFormat
from service.auth import CallerDep
from service.deps import JobStoreDep, RedisDep, SettingsDep
from service.errors import ApiError
from service.submission import submit

router = APIRouter(tags=["openai"])

_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
_POLL_SECONDS = 0.05


class ImagesGenerationRequest(BaseModel):
    """The OpenAI request body; fields this service has no use for (quality, style, user, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=2000)
    n: int = Field(default=1, ge=1, le=8)
    size: str = Field(default="512x512", max_length=9, description="WxH, each a multiple of 8 in 64..2048")
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


def _generate_request(body: ImagesGenerationRequest) -> GenerateRequest:
    match = _SIZE.match(body.size)
    if match is None:
        raise ApiError(422, f"size: expected WxH such as 512x512, got {body.size!r}", code="invalid_request")
    width, height = int(match.group(1)), int(match.group(2))
    try:
        return GenerateRequest(
            prompt=body.prompt,
            num_images=body.n,
            width=width,
            height=height,
            output_format=body.output_format,
            model=None if body.model in (None, "dall-e-2", "dall-e-3", "gpt-image-1") else body.model,
        )
    except ValueError as exc:
        raise ApiError(422, f"size: {exc}", code="invalid_request") from exc


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    responses={status: {"model": ErrorResponse} for status in (400, 401, 422, 429, 500, 504)},
)
def images_generations(
    body: ImagesGenerationRequest,
    request: Request,
    redis: RedisDep,
    store: JobStoreDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> ImagesResponse:
    """Generate `n` images for `prompt` and answer when they are done (or 504 after the configured timeout)."""
    job, _ = submit(_generate_request(body), redis, store, settings, caller)
    deadline = time.monotonic() + settings.openai_timeout_seconds
    while (current := store.get(job.id)) is not None and not current.status.is_terminal():
        if time.monotonic() > deadline:
            store.cancel(job.id, model_queue(redis, job.model).key)  # nobody waits for it any more
            raise ApiError(504, f"the images were not ready within {settings.openai_timeout_seconds}s (job {job.id})")
        time.sleep(_POLL_SECONDS)
    if current is None or current.status is not JobStatus.SUCCEEDED:
        error = current.error if current is not None else None
        status = 400 if error is not None and error.code == "invalid_request" else 500
        message = error.message if error is not None else f"job {job.id} ended {current.status if current else 'lost'}"
        raise ApiError(status, message, code=error.code if error else "internal")
    if body.response_format == "url":
        base = str(request.base_url).rstrip("/")
        data = [ImageData(url=base + url, revised_prompt=body.prompt) for url in current.images]
    else:
        data = [
            ImageData(b64_json=base64.b64encode(store.get_image(job.id, i) or b"").decode(), revised_prompt=body.prompt)
            for i in range(len(current.images))
        ]
    return ImagesResponse(
        created=int(current.timings.created_at.timestamp()), data=data, output_format=body.output_format
    )
