"""How a job's images reach whoever reads the job: `/jobs/{id}/images/{n}` paths the API serves (from Redis, or from
the bucket in proxy mode), or presigned GET URLs of the bucket, made at each read so they are always fresh.

Every view of a job (GET /jobs/{id}, the `succeeded` event, webhooks, the OpenAI `url` answer) goes through here.
The calls that reach the store block: routes make them in the thread pool.
"""

from __future__ import annotations

import json
import time

from redis import Redis

from core.object_store import ImageStore, RedisImageStore, ResultStoreUnavailableError, schedule_deletion
from core.schemas import Job, JobStatus
from core.settings import Settings
from core.sharding import RedisShards
from service.errors import ApiError

# Retry-After of a 503 for an object store that does not answer.
STORE_RETRY_SECONDS = 5


class ResultImages:
    """The API's view of the image store: presigned URLs or API paths, and the bytes behind the paths."""

    def __init__(self, store: ImageStore, settings: Settings, shards: RedisShards[Redis] | None = None) -> None:
        """`shards`: with queues sharded by model, images kept in Redis are read from their job's Redis."""
        self.store = store
        self.presigned = not store.inline and settings.result_urls == "presigned"
        self._shards = shards if store.inline and shards is not None and settings.redis_shards else None
        self._ttl = settings.result_ttl_seconds

    def key(self, job: Job, index: int) -> str:
        """The store's key of a succeeded job's `index`-th image (the record's attempt is the one that won)."""
        return self.store.result_key(job.id, job.attempts, index, job.request.output_format.value)

    def present(self, job: Job) -> Job:
        """The job as readers see it: with presigned image URLs when so configured, else as recorded."""
        if not self.presigned or job.status is not JobStatus.SUCCEEDED or not job.images:
            return job
        return job.model_copy(update={"images": self.urls(job)})

    def urls(self, job: Job) -> list[str]:
        """Where a client GETs each image of a succeeded job: a presigned URL, or the API's path."""
        if not self.presigned:
            return list(job.images)
        return [self.store.url(self.key(job, index)) or path for index, path in enumerate(job.images)]

    def event_data(self, data: str, job: Job | None) -> str:
        """A `succeeded` event's JSON with its images as `urls(job)` (unchanged when not presigning, or when the job
        is gone: its images went with it)."""
        if not self.presigned or job is None or job.status is not JobStatus.SUCCEEDED:
            return data
        event = json.loads(data)
        event["images"] = self.urls(job)
        return json.dumps(event, separators=(",", ":"))

    def image(self, job: Job, index: int) -> bytes | None:
        """The bytes of a succeeded job's image (None when expired); 503 `result_store_unavailable` when the store
        does not answer."""
        store = self.store
        if self._shards is not None:
            store = RedisImageStore(self._shards.for_job(job.id), self._ttl)
        try:
            return store.get(self.key(job, index))
        except ResultStoreUnavailableError as exc:
            raise unavailable(exc) from exc

    def put_inputs(self, redis: Redis, job_id: str, inputs: dict[str, bytes], ttl: int) -> None:
        """Put a new job's input images in the bucket (before its record exists: the worker reads them from there),
        to be deleted with the job; 503 `result_store_unavailable` when the store does not take them."""
        names = {field: self.store.input_key(job_id, field) for field in inputs}
        schedule_deletion(redis, names.values(), time.time() + ttl)
        try:
            for field, data in inputs.items():
                self.store.put(names[field], data, "application/octet-stream")
        except ResultStoreUnavailableError as exc:
            raise unavailable(exc) from exc


def unavailable(exc: ResultStoreUnavailableError) -> ApiError:
    """The 503 of an object store that did not answer."""
    return ApiError(
        503,
        f"the image store is unavailable; retry later ({exc})",
        code="result_store_unavailable",
        headers={"Retry-After": str(STORE_RETRY_SECONDS)},
    )
