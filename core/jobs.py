"""The job record in Redis: created by the API, advanced by the worker, read by both."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from redis import Redis
from redis.client import Pipeline

from core import keys
from core.schemas import GenerateRequest, Job, JobError, JobStatus, Progress, Timings


def _now() -> float:
    return time.time()


def _ts(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=UTC) if value else None


def image_url(job_id: str, index: int) -> str:
    """Path under which the API serves a job's `index`-th image."""
    return f"/jobs/{job_id}/images/{index}"


class JobStore:
    """Reads and writes job records, result images and their TTLs. Writes take an optional pipeline."""

    def __init__(self, redis: Redis, *, result_ttl: int, queue_ttl: int, job_timeout: int) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.queue_ttl = queue_ttl
        self.job_timeout = job_timeout

    def create(self, job_id: str, model: str, request: GenerateRequest, pipeline: Pipeline | None = None) -> Job:
        """Write the record of a newly accepted job; it lives long enough to wait in the queue, run and be read."""
        if request.seed is None:
            raise ValueError("assign the seed before creating the job")
        now = _now()
        fields = {
            "id": job_id,
            "status": JobStatus.QUEUED.value,
            "model": model,
            "request": request.model_dump_json(),
            "seed": request.seed,
            "created_at": now,
            "step": 0,
            "total": request.steps,
        }
        pipe = pipeline if pipeline is not None else self.redis.pipeline()
        key = keys.job_key(job_id)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.queue_ttl + self.job_timeout + self.result_ttl)
        if pipeline is None:
            pipe.execute()
        return self._job_from_fields({k: str(v) for k, v in fields.items()})

    def get(self, job_id: str) -> Job | None:
        """The job's record, or None when unknown or expired."""
        raw = self.redis.hgetall(keys.job_key(job_id))
        if not raw:
            return None
        return self._job_from_fields({k.decode(): v.decode() for k, v in raw.items()})

    def mark_running(self, job_id: str, worker_id: str, total_steps: int) -> None:
        """The worker has started the job."""
        key = keys.job_key(job_id)
        pipe = self.redis.pipeline()
        pipe.hset(
            key,
            mapping={
                "status": JobStatus.RUNNING.value,
                "started_at": _now(),
                "worker_id": worker_id,
                "step": 0,
                "total": total_steps,
            },
        )
        pipe.expire(key, self.job_timeout + self.result_ttl)
        pipe.execute()

    def set_progress(self, job_id: str, step: int, total: int) -> None:
        """Record that `step` of `total` denoising steps are done."""
        self.redis.hset(keys.job_key(job_id), mapping={"step": step, "total": total})

    def mark_succeeded(self, job_id: str, images: list[bytes]) -> None:
        """Store the result images and the final record, all expiring after the result TTL."""
        key = keys.job_key(job_id)
        pipe = self.redis.pipeline()
        for index, data in enumerate(images):
            pipe.set(keys.job_image_key(job_id, index), data, ex=self.result_ttl)
        pipe.hset(
            key,
            mapping={
                "status": JobStatus.SUCCEEDED.value,
                "finished_at": _now(),
                "images": json.dumps([image_url(job_id, i) for i in range(len(images))]),
            },
        )
        pipe.expire(key, self.result_ttl)
        pipe.execute()

    def mark_failed(self, job_id: str, worker_id: str, code: str, message: str) -> None:
        """Record a failure with a stable code; the record then expires after the result TTL."""
        key = keys.job_key(job_id)
        pipe = self.redis.pipeline()
        pipe.hset(
            key,
            mapping={
                "status": JobStatus.FAILED.value,
                "finished_at": _now(),
                "worker_id": worker_id,
                "error": JobError(code=code, message=message).model_dump_json(),
            },
        )
        pipe.expire(key, self.result_ttl)
        pipe.execute()

    def get_image(self, job_id: str, index: int) -> bytes | None:
        """Bytes of a result image, or None when absent or expired."""
        data = self.redis.get(keys.job_image_key(job_id, index))
        return bytes(data) if data is not None else None

    @staticmethod
    def _job_from_fields(fields: dict[str, str]) -> Job:
        error = fields.get("error")
        created = _ts(fields["created_at"])
        assert created is not None
        return Job(
            id=fields["id"],
            status=JobStatus(fields["status"]),
            model=fields["model"],
            request=GenerateRequest.model_validate_json(fields["request"]),
            seed=int(fields["seed"]),
            progress=Progress(step=int(fields.get("step", 0)), total=int(fields.get("total", 0))),
            timings=Timings(
                created_at=created,
                started_at=_ts(fields.get("started_at")),
                finished_at=_ts(fields.get("finished_at")),
            ),
            images=json.loads(fields.get("images", "[]")),
            error=JobError.model_validate_json(error) if error else None,
            worker_id=fields.get("worker_id") or None,
        )
