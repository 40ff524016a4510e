"""`POST /generate`: accept a request and queue it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from core.schemas import ErrorResponse, GenerateRequest, Job
from service.auth import CallerDep
from service.deps import JobStoreDep, RedisDep, SettingsDep
from service.submission import submit

router = APIRouter(tags=["generate"])

_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 409, 413, 415, 422, 429, 503)}


@router.post("/generate", status_code=202, response_model=Job, responses=_ERRORS)
def generate(
    request: GenerateRequest,
    response: Response,
    redis: RedisDep,
    store: JobStoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Job:
    """Queue a text-to-image job; answers at once with the job, its id and `Location`."""
    job, replayed = submit(request, redis, store, settings, caller, idempotency_key)
    response.headers["Location"] = f"/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job
