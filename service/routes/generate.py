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
# Multipart fields whose value is JSON text: the lists (loras, webhook_events); every other field is a plain value
# pydantic converts.
_JSON_FORM_FIELDS = tuple(
    name for name, field in GenerateRequest.model_json_schema()["properties"].items() if field.get("type") == "array"
)


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


def _inline_refs(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` with every `{"$ref": "#/$defs/X"}` replaced by X itself (siblings such as `default` kept)."""
    if isinstance(schema, list):
        return [_inline_refs(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return _inline_refs(target, definitions) | {key: value for key, value in schema.items() if key != "$ref"}
    return {key: _inline_refs(value, definitions) for key, value in schema.items()}


def _form_property(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """One `GenerateRequest` field as a multipart part: an image as a file, a list as JSON text, any other field as
    its JSON schema; a field that may be null is a part left out, so the null branch goes."""
    described: dict[str, Any] = {key: schema[key] for key in ("title", "description") if key in schema}
    if name in IMAGE_FIELDS:
        return {"type": "string", "format": "binary", **described}
    if name in _JSON_FORM_FIELDS:
        return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema, **described}
    branches = [branch for branch in schema.get("anyOf", ()) if branch.get("type") != "null"]
    if len(branches) == 1:
        schema = {key: value for key, value in schema.items() if key != "anyOf"} | branches[0]
    return {key: value for key, value in schema.items() if not (key == "default" and value is None)}


def _request_body_schema() -> dict[str, Any]:
    """The OpenAPI request body: the JSON schema, and the same fields as multipart (generated from `GenerateRequest`)
    with images as file parts and list fields as JSON text."""
    schema = GenerateRequest.model_json_schema()
    properties = _inline_refs(schema["properties"], schema.get("$defs", {}))
    form_properties = {name: _form_property(name, prop) for name, prop in properties.items()}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": form_properties, "required": schema["required"]}
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
