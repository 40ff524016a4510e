"""`POST /generate`: accept a request (JSON, or multipart with image file parts) and queue it; with `Prefer: wait`,
answer when the job ends if it ends in time."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from core.schemas import IMAGE_FIELDS, ErrorResponse, GenerateRequest, Job, JobStatus
from service.auth import CallerDep
from service.deps import (
    JobStoreDep,
    ResultsDep,
    SettingsDep,
    async_redis_for_job,
    job_store_for,
)
from service.errors import ApiError
from service.preferences import wait_preference
from service.submission import SubmissionClients, submit
from service.waiting import WaitOutcome, wait_for_end

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


@router.post(
    "/generate",
    status_code=202,
    response_model=Job,
    responses={200: {"model": Job, "description": "With `Prefer: wait`: the job ended in time."}, **_ERRORS},
    openapi_extra=_request_body_schema(),
)
async def generate(
    body: Annotated[GenerateRequest, Depends(generate_request)],
    request: Request,
    response: Response,
    store: JobStoreDep,
    settings: SettingsDep,
    results: ResultsDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    prefer: Annotated[
        list[str] | None,
        Header(
            description="`wait` or `wait=N` (seconds): hold the request until the job ends, at most N seconds and "
            "`IMAGEGEN_MAX_PREFER_WAIT_SECONDS`; honoured waits are echoed in `Preference-Applied`."
        ),
    ] = None,
    response_format: Annotated[
        Literal["url", "b64_json"],
        Query(description="`b64_json`: a job that succeeded within `Prefer: wait` carries its images in `images_b64`."),
    ] = "url",
) -> Response:
    """Queue a job (text-to-image, img2img with `init_image`, or inpainting with `image` and `mask_image`); answers at
    once with the job, its id and `Location` (202), or with `Prefer: wait` when the job ends within the wait (200)."""
    job, replayed = await submit(body, SubmissionClients.of(request), store, settings, caller, idempotency_key, results)
    response.headers["Location"] = f"/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    wait = wait_preference(prefer or (), settings.max_prefer_wait_seconds)
    if wait is None:
        return _job_response(results.present(job), response)  # a replayed job may have succeeded already
    response.headers["Preference-Applied"] = f"wait={wait}"
    if not job.status.is_terminal():  # a replayed job may have ended already
        outcome = await wait_for_end(async_redis_for_job(request, job.id), job.id, request.receive, wait)
        if outcome is WaitOutcome.CLIENT_GONE:
            return _job_response(job, response)  # nobody reads it; the job was accepted and runs on, as without a wait
    current = await run_in_threadpool(job_store_for(request, job.id).get, job.id) or job
    if not current.status.is_terminal():
        return _job_response(current, response)  # still queued or running: 202, followed as without the wait
    response.status_code = 200
    if response_format == "b64_json" and current.status is JobStatus.SUCCEEDED:
        images = await run_in_threadpool(lambda: [results.image(current, i) for i in range(len(current.images))])
        current = current.model_copy(
            update={"images_b64": [base64.b64encode(image or b"").decode() for image in images]}
        )
    return _job_response(results.present(current), response)


def _job_response(job: Job, response: Response) -> Response:
    """The job as the route's JSON answer, serialized once (FastAPI would first validate it again against the
    `response_model`), with the status (202 unless set) and headers set on `response`."""
    return Response(
        job.model_dump_json(),
        status_code=response.status_code or 202,
        headers=dict(response.headers),
        media_type="application/json",
    )
