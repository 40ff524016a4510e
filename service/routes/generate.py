"""`POST /generate`: accept a request (JSON, or multipart with image file parts) and queue it."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from core.schemas import IMAGE_FIELDS, ErrorResponse, GenerateRequest, Job
from service.auth import CallerDep
from service.deps import JobStoreDep, RedisDep, SettingsDep
from service.errors import ApiError
from service.submission import submit

router = APIRouter(tags=["generate"])

GENERATE_MEDIA_TYPES = ("application/json", "multipart/form-data")
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 409, 413, 415, 422, 429, 503)}
# Multipart fields whose value is JSON (lists); every other field is a plain value pydantic converts.
_JSON_FORM_FIELDS = ("loras", "webhook_events")


async def _form_fields(request: Request) -> dict[str, Any]:
    """The request fields of a multipart body: image parts as base64, list fields parsed from JSON."""
    fields: dict[str, Any] = {}
    async with request.form(max_files=len(IMAGE_FIELDS), max_fields=64) as form:
        for name, value in form.multi_items():
            if name in fields:
                raise ApiError(422, f"{name}: given more than once", code="invalid_request")
            if isinstance(value, UploadFile):
                if name not in IMAGE_FIELDS:
                    raise ApiError(
                        422, f"{name}: not an image field ({', '.join(IMAGE_FIELDS)})", code="invalid_request"
                    )
                fields[name] = base64.b64encode(await value.read()).decode()
            elif name in _JSON_FORM_FIELDS:
                try:
                    fields[name] = json.loads(value)
                except ValueError as exc:
                    raise ApiError(422, f"{name}: not valid JSON ({exc})", code="invalid_request") from exc
            else:
                fields[name] = value
    return fields


async def generate_request(request: Request) -> GenerateRequest:
    """The body as a `GenerateRequest`: JSON (images as base64), or multipart/form-data (images as file parts)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            return GenerateRequest.model_validate(await _form_fields(request))
        return GenerateRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def _request_body_schema() -> dict[str, Any]:
    """The OpenAPI request body: the JSON schema, and the same fields as multipart with images as file parts."""
    reference = {"$ref": "#/components/schemas/GenerateRequest"}
    form_properties: dict[str, Any] = {
        name: {"type": "string"} for name in ("prompt", "negative_prompt", "sampler", "output_format", "model")
    }
    form_properties |= {name: {"type": "integer"} for name in ("width", "height", "steps", "seed", "num_images")}
    form_properties |= {name: {"type": "number"} for name in ("guidance_scale", "strength")}
    form_properties |= {name: {"type": "string", "format": "binary"} for name in IMAGE_FIELDS}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": reference},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": form_properties, "required": ["prompt"]}
                },
            },
        }
    }


@router.post("/generate", status_code=202, response_model=Job, responses=_ERRORS, openapi_extra=_request_body_schema())
def generate(
    body: Annotated[GenerateRequest, Depends(generate_request)],
    response: Response,
    redis: RedisDep,
    store: JobStoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Job:
    """Queue a job (text-to-image, img2img with `init_image`, or inpainting with `image` and `mask_image`); answers at
    once with the job, its id and `Location`."""
    job, replayed = submit(body, redis, store, settings, caller, idempotency_key)
    response.headers["Location"] = f"/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job
