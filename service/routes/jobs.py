"""`GET /jobs` (the caller's jobs, a page at a time), `GET /jobs/{id}`, its images, and `DELETE /jobs/{id}` (cancel)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from core import keys
from core.job_index import Position, read_page
from core.jobs import CancelOutcome, JobStore
from core.schemas import ErrorResponse, GenerateRequest, Job, JobList, JobStatus
from service.auth import Caller, CallerDep
from service.deps import JobStoreDep, ResultsDep, async_redis_for_job, async_shards
from service.errors import ApiError
from service.queue_view import QueueViews

router = APIRouter(tags=["jobs"])

_NOT_FOUND = {401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}


def find_job(store: JobStoreDep, job_id: str, caller: Caller) -> Job:
    """The job, or a 404 in the API's error shape (also for another API key's job: its existence is not told)."""
    job = store.get(job_id) if len(job_id) <= 64 else None
    if job is None or not caller.can_see(job):
        raise ApiError(404, f"no job {job_id!r} (unknown, or expired after its result TTL)")
    return job


@router.get("/jobs", response_model=JobList, responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
async def list_jobs(
    request: Request,
    results: ResultsDep,
    caller: CallerDep,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs in these states (repeatable).")] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=100, description="Only this model's jobs.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page at most.")] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="The previous page's `next_cursor`.")] = None,
) -> JobList:
    """The caller's jobs, newest first (an admin key's: every job), a page at a time; records that expired are gone
    from the list as from `GET /jobs/{id}`. Reads Redis on the event loop's client, holding no thread while it waits."""
    try:
        after = Position.decode(cursor) if cursor else None  # empty: the first page, as absent
    except ValueError as exc:
        raise ApiError(
            422, f"cursor: {exc}", code="invalid_request", details=[{"field": "cursor", "message": str(exc)}]
        ) from exc
    statuses = {value.value for value in status} if status else None
    # An admin (and everyone, with auth off) reads the index of all jobs; a key, its own.
    index = keys.all_jobs_key() if caller.admin or caller.key_id is None else keys.owner_jobs_key(caller.key_id)

    def wanted(record: dict[str, str]) -> bool:
        return (statuses is None or record["status"] in statuses) and (model is None or record["model"] == model)

    # Each Redis of the deployment (queues sharded by model) indexes the jobs it holds: the page merges them.
    clients = async_shards(request).all()
    records, position = await read_page(clients, index, wanted=wanted, limit=limit, after=after)

    def jobs() -> list[Job]:  # parsing and presenting (presigned URLs are signed here) stays off the event loop
        found = (JobStore.job_from_record(record) for record in records)
        return [results.present(job) for job in found if caller.can_see(job)]

    return JobList(jobs=await run_in_threadpool(jobs), next_cursor=position.encode() if position else None)


# Polls read the same stored request again and again: parsed once per process (pydantic's validation of a request is
# most of the CPU a poll costs), for this many requests.
_PARSED_REQUESTS_SIZE = 4096
_parsed_requests: OrderedDict[str, GenerateRequest] = OrderedDict()


def _parsed_request(stored: str) -> GenerateRequest:
    request = _parsed_requests.get(stored)
    if request is None:
        request = _parsed_requests[stored] = GenerateRequest.model_validate_json(stored)
        if len(_parsed_requests) > _PARSED_REQUESTS_SIZE:
            _parsed_requests.popitem(last=False)
    return request


@router.get("/jobs/{job_id}", response_model=Job, responses=_NOT_FOUND)
async def get_job(job_id: str, request: Request, results: ResultsDep, caller: CallerDep) -> Response:
    """The job's status, queue position and ETA, progress, timings, seed, image URLs or error. On the event loop's
    async client, holding no thread: one HGETALL (and, while queued, one LPOS; `QueueViews` keeps the rest)."""
    redis = async_redis_for_job(request, job_id)
    raw = await redis.hgetall(keys.job_key(job_id)) if len(job_id) <= 64 else None
    record = {key.decode(): value.decode() for key, value in raw.items()} if raw else None
    job = JobStore.job_from_record(record, _parsed_request(record["request"])) if record else None
    if job is None or not caller.can_see(job):
        raise ApiError(404, f"no job {job_id!r} (unknown, or expired after its result TTL)")
    if job.status is JobStatus.QUEUED:
        views: QueueViews = request.app.state.queue_views
        job = await views.with_queue_view(job, redis)
    else:
        job = results.present(job)
    # Serialized here, once: FastAPI would validate the model again against `response_model` before serializing it.
    return Response(job.model_dump_json(), media_type="application/json")


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
def get_image(job_id: str, index: int, store: JobStoreDep, results: ResultsDep, caller: CallerDep) -> Response:
    """The bytes of the job's `index`-th image, once the job has succeeded (from Redis, or fetched from the bucket:
    a sync route, so the fetch holds a pool thread, not the event loop)."""
    job = find_job(store, job_id, caller)
    if job.status is not JobStatus.SUCCEEDED:
        raise ApiError(404, f"job {job_id} has no images yet (status {job.status.value})")
    data = results.image(job, index) if 0 <= index < len(job.images) else None
    if data is None:
        raise ApiError(404, f"job {job_id} has no image {index} (it has {len(job.images)})")
    return Response(content=data, media_type=job.request.output_format.content_type)
