"""`GET /jobs/{id}` and its images."""

from __future__ import annotations

from fastapi import APIRouter, Response

from core.queueing import model_queue, queue_position
from core.schemas import ErrorResponse, Job, JobStatus
from service.deps import JobStoreDep, RedisDep
from service.errors import ApiError

router = APIRouter(tags=["jobs"])

_NOT_FOUND = {404: {"model": ErrorResponse}}


def _find(store: JobStoreDep, job_id: str) -> Job:
    job = store.get(job_id) if len(job_id) <= 64 else None
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (unknown, or expired after its result TTL)")
    return job


@router.get("/jobs/{job_id}", response_model=Job, responses=_NOT_FOUND)
def get_job(job_id: str, store: JobStoreDep, redis: RedisDep) -> Job:
    """The job's status, progress, timings, seed, image URLs or error."""
    job = _find(store, job_id)
    if job.status is JobStatus.QUEUED:
        job.queue_position = queue_position(model_queue(redis, job.model), job.id)
    return job


@router.get(
    "/jobs/{job_id}/images/{index}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}, **_NOT_FOUND},
)
def get_image(job_id: str, index: int, store: JobStoreDep) -> Response:
    """The bytes of the job's `index`-th image, once the job has succeeded."""
    job = _find(store, job_id)
    if job.status is not JobStatus.SUCCEEDED:
        raise ApiError(404, f"job {job_id} has no images yet (status {job.status.value})")
    data = store.get_image(job_id, index) if 0 <= index < len(job.images) else None
    if data is None:
        raise ApiError(404, f"job {job_id} has no image {index} (it has {len(job.images)})")
    return Response(content=data, media_type=job.request.output_format.content_type)
