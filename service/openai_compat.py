"""What the OpenAI images routes share: the request fields both take, their mapping onto a `GenerateRequest`, refusals
renamed to the OpenAI parameter that caused them, submission, a finished job's answer, and the partial-image cadence.

The routes (service/routes/openai_images.py) only parse their body and pick sync or streaming; the queue, limits,
keys and workers are `POST /generate`'s (service/submission.py).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from core.catalog import entry_of, model_entries, served_entry
from core.fields import NumImages, Prompt
from core.jobs import JobStore
from core.schemas import FieldError, GenerateRequest, Job, JobStatus, OutputFormat
from core.settings import Settings
from service.auth import Caller
from service.errors import ApiError
from service.results import ResultImages
from service.submission import SubmissionClients, submit

# OpenAI's own model names: they mean "this deployment's default model".
OPENAI_MODEL_NAMES = frozenset({"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"})
MAX_PARTIAL_IMAGES = 3
_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")

# The native field a problem is about -> the OpenAI parameter that set it (errors on these routes name OpenAI's).
_PARAMS = {
    "width": "size",
    "height": "size",
    "width*height": "size",
    "num_images": "n",
    "output_quality": "output_compression",
    "preview_every": "partial_images",
    "init_image": "image",
    "mask_image": "mask",
}


class ImagesRequestFields(BaseModel):
    """The OpenAI request fields both routes take; the others OpenAI defines (quality, style, user, moderation, ...)
    are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: Prompt
    n: NumImages = 1
    size: str | None = Field(
        default=None,
        max_length=9,
        description="WxH, each in 64..2048 and a multiple of the model's size step (`GET /models` "
        "capabilities.size_multiple: 8, 16 for flux, sd3, qwen-image); absent or `auto`: the model's default size "
        "(edits: the input image's)",
    )
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: OutputFormat = OutputFormat.PNG
    output_compression: int | None = Field(
        default=None, ge=0, le=100, description="JPEG/WebP quality (0 counts as 1); ignored for PNG."
    )
    background: Literal["auto", "opaque"] | None = Field(
        default=None, description="Images are always opaque: `transparent` is refused."
    )
    model: str | None = Field(default=None, max_length=100)
    stream: bool = Field(default=False, description="Answer Server-Sent Events: partial images, then the image.")
    partial_images: int = Field(
        default=0, ge=0, le=MAX_PARTIAL_IMAGES, description="With stream: at most this many step previews."
    )

    @model_validator(mode="after")
    def _one_image_when_streaming(self) -> ImagesRequestFields:
        if self.stream and self.n != 1:
            # A partial-image event names no image index, so a stream carries one image.
            raise PydanticCustomError(
                "stream_one_image", "stream gives one image: n must be 1, got {n}", {"field": "n", "n": self.n}
            )
        return self


def as_params(errors: Sequence[Any]) -> list[Any]:
    """Pydantic errors of the native request with each location's field renamed to the OpenAI parameter."""
    renamed = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if loc and loc[0] in _PARAMS:
            error = {**error, "loc": (_PARAMS[str(loc[0])], *loc[1:])}
        ctx = error.get("ctx") or {}
        if ctx.get("field") in _PARAMS:  # a cross-field rule names its field in ctx
            error = {**error, "ctx": {**ctx, "field": _PARAMS[ctx["field"]]}}
        renamed.append(error)
    return renamed


def parse_size(size: str | None) -> dict[str, int]:
    """`width` and `height` of an OpenAI `size` (`WxH`); none for absent or `auto`."""
    if size in (None, "auto"):
        return {}
    match = _SIZE.match(size)
    if match is None:
        message = f"expected WxH such as 512x512, or auto; got {size!r}"
        raise RequestValidationError([{"loc": ("size",), "msg": message, "type": "size_format"}])
    return {"width": int(match.group(1)), "height": int(match.group(2))}


def native_model(model: str | None) -> str | None:
    """The model a request names: None (the default model) for OpenAI's own model names."""
    return None if model in OPENAI_MODEL_NAMES else model


def default_steps(settings: Settings, model: str | None) -> int:
    """The steps a request to `model` (an OpenAI name or None: the default one) runs when it names none: the
    model's default."""
    model = native_model(model)
    entries = model_entries(settings)
    entry = entry_of(settings, model or served_entry(settings, entries)[0], entries)
    steps = entry.defaults().get("steps") if entry is not None else None
    return int(steps or GenerateRequest.model_fields["steps"].default)


def preview_every(steps_run: int, partial_images: int) -> int:
    """The `preview_every` that gives about `partial_images` previews over `steps_run` steps (0: none), the last at
    or before the last step; the stream forwards at most `partial_images` of them."""
    return 0 if partial_images == 0 else max(1, math.ceil(steps_run / (partial_images + 1)))


def generate_request(fields: ImagesRequestFields, settings: Settings, **native: Any) -> GenerateRequest:
    """The native request of an OpenAI one: prompt, n, size, output format and quality, model, previews for the
    stream, plus the `native` fields the route adds (input images, strength); invalid -> 422 naming OpenAI's param."""
    model = native_model(fields.model)
    request: dict[str, Any] = {
        "prompt": fields.prompt,
        "num_images": fields.n,
        "output_format": fields.output_format,
        "model": model,
        **parse_size(fields.size),
        **native,
    }
    if fields.output_compression is not None and fields.output_format is not OutputFormat.PNG:
        request["output_quality"] = max(1, fields.output_compression)
    if fields.stream and fields.partial_images:
        steps = default_steps(settings, model)
        strength = native.get("strength", 1.0)
        request["preview_every"] = preview_every(max(1, int(steps * strength)), fields.partial_images)
    try:
        return GenerateRequest(**request)
    except ValidationError as exc:
        raise RequestValidationError(as_params(exc.errors(include_url=False))) from exc


async def submit_openai(
    request: GenerateRequest,
    clients: SubmissionClients,
    store: JobStore,
    settings: Settings,
    caller: Caller,
    results: ResultImages,
) -> Job:
    """`submit` (validation, limits, keys, queue), with a refused field named as the OpenAI parameter that set it."""
    try:
        return (await submit(request, clients, store, settings, caller, results=results))[0]
    except FieldError as exc:
        if exc.field not in _PARAMS:
            raise
        raise FieldError(_PARAMS[exc.field], exc.message, type=exc.type) from exc
    except ApiError as exc:
        renamed = _renamed(exc)
        if renamed is None:
            raise
        raise renamed from exc
    except RequestValidationError as exc:
        raise RequestValidationError(as_params(exc.errors())) from exc


def _renamed(exc: ApiError) -> ApiError | None:
    """`exc` naming the OpenAI parameter in place of the native field it names first (an input image's problem:
    `init_image: ...` -> `image: ...`); None when it names none of them."""
    details = exc.details if isinstance(exc.details, list) and exc.details else None
    field = details[0].get("field") if details is not None and isinstance(details[0], dict) else None
    if details is None or not isinstance(field, str) or field not in _PARAMS:
        return None
    param, prefix = _PARAMS[field], f"{field}: "
    message = param + ": " + exc.message.removeprefix(prefix) if exc.message.startswith(prefix) else exc.message
    details = [{**details[0], "field": param}, *details[1:]]
    return ApiError(exc.status, message, code=exc.code, details=details, headers=exc.headers)


def succeeded_job(store: JobStore, job_id: str) -> Job:
    """The job once it has ended: itself when it succeeded, else the error to answer (400 for a request the worker
    found invalid, 500 otherwise)."""
    current = store.get(job_id)
    if current is not None and current.status is JobStatus.SUCCEEDED:
        return current
    error = current.error if current is not None else None
    status = 400 if error is not None and error.code == "invalid_request" else 500
    message = error.message if error is not None else f"job {job_id} ended {current.status if current else 'lost'}"
    raise ApiError(status, message, code=error.code if error else "internal")


class OpenAIImageData(BaseModel):
    """One image of the answer."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    """The OpenAI answer."""

    created: int
    data: list[OpenAIImageData]
    output_format: OutputFormat
    size: str = Field(description="WxH of the images.")


def image_size(request: GenerateRequest) -> str:
    """The OpenAI `size` of a request's images."""
    return f"{request.width}x{request.height}"


def absolute_url(url: str, base_url: str) -> str:
    """An image URL as a client outside the API uses it: the API's paths under `base_url`, presigned ones as they
    are."""
    return base_url.rstrip("/") + url if url.startswith("/") else url


def result_images(job: Job, results: ResultImages) -> list[bytes]:
    """The bytes of a succeeded job's images (empty for one that expired meanwhile)."""
    return [results.image(job, i) or b"" for i in range(len(job.images))]


def images_response(job: Job, results: ResultImages, response_format: str, base_url: str) -> OpenAIImagesResponse:
    """The answer for a succeeded job: its images as base64, or as absolute URLs (under `base_url`, or presigned)."""
    prompt = job.request.prompt
    if response_format == "url":
        data = [OpenAIImageData(url=absolute_url(url, base_url), revised_prompt=prompt) for url in results.urls(job)]
    else:
        images = result_images(job, results)
        data = [OpenAIImageData(b64_json=base64.b64encode(image).decode(), revised_prompt=prompt) for image in images]
    return OpenAIImagesResponse(
        created=int(job.timings.created_at.timestamp()),
        data=data,
        output_format=job.request.output_format,
        size=image_size(job.request),
    )
