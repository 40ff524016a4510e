"""`POST /generate`: accept a request and queue it."""

from __future__ import annotations

from fastapi import APIRouter, Response

from core.schemas import ErrorResponse, GenerateRequest, Job
from service.deps import JobStoreDep, RedisDep, SettingsDep
from service.submission import submit

router = APIRouter(tags=["generate"])


@router.post(
    "/generate",
    status_code=202,
    response_model=Job,
    responses={413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def generate(
    request: GenerateRequest, response: Response, redis: RedisDep, store: JobStoreDep, settings: SettingsDep
) -> Job:
    """Queue a text-to-image job; answers at once with the job, its id and `Location`."""
    job = submit(request, redis, store, settings)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job
