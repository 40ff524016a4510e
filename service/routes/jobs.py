"""`GET /jobs/{id}`, its images, and `DELETE /jobs/{id}` (cancel)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from core.jobs import CancelOutcome
from core.schemas import ErrorResponse, Job, JobStatus
from service.auth import Caller, CallerDep
from service.deps import JobStoreDep, RedisDep
from service.errors import ApiError
from service.queue_view import with_queue_view

router = APIRouter(tags=["jobs"])

_NOT_FOUND = {401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}


def find_job(store: JobStoreDep, job_id: str, caller: Caller) -> Job:
    """The job, or a 404 in the API's error shape (also for another API key's job: its existence is not told)."""
    job = store.get(job_id) if len(job_id) <= 64 else None
    if job is None or not caller.can_see(job):
        raise ApiError(404, f"no job {job_id!r} (unknown, or expired after its result TTL)")
    return job


@router.get("/jobs/{job_id}", response_model=Job, responses=_NOT_FOUND)
def get_job(job_id: str, store: JobStoreDep, redis: RedisDep, caller: CallerDep) -> Job:
    """The job's status, queue position and ETA, progress, timings, seed, image URLs or error."""
    job = find_job(store, job_id, caller)
    return with_queue_view(job, redis, store) if job.status is JobStatus.QUEUED else job


@router.delete(
    "/jobs/{job_id}",
    response_model=Job,
    responses={
        202: {"model": Job, "description": "Running: it stops at the next step."},
        409: {"model": ErrorResponse},
        **_NOT_FOUND,
    },
)
def cancel_job(job_id: str, store: JobStoreDep, response: Response, caller: CallerDep) -> Job:
    """Cancel: a queued job leaves the queue at once (200); a running one stops at its next step (202)."""
    find_job(store, job_id, caller)  # 404 for a job this caller may not see
    outcome = store.cancel(job_id)
    if outcome is CancelOutcome.UNKNOWN:
        raise ApiError(404, f"no job {job_id!r} (unknown, or expired after its result TTL)")
    current = find_job(store, job_id, caller)
    if outcome is CancelOutcome.FINISHED:
        raise ApiError(409, f"job {job_id} already ended ({current.status.value}); nothing to cancel")
    if outcome is CancelOutcome.REQUESTED:
        response.status_code = 202
    return current


@router.get(
    "/jobs/{job_id}/images/{index}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}, **_NOT_FOUND},
)
def get_image(job_id: str, index: int, store: JobStoreDep, caller: CallerDep) -> Response:
    """The bytes of the job's `index`-th image, once the job has succeeded."""
    job = find_job(store, job_id, caller)
    if job.status is not JobStatus.SUCCEEDED:
        raise ApiError(404, f"job {job_id} has no images yet (status {job.status.value})")
    data = store.get_image(job_id, index) if 0 <= index < len(job.images) else None
    if data is None:
        raise ApiError(404, f"job {job_id} has no image {index} (it has {len(job.images)})")
    return Response(content=data, media_type=job.request.output_format.content_type)
