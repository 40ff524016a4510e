"""The job record and its event stream in Redis: created by the API, advanced by the worker, read by both.

Every status change is one Lua script (`core/job_scripts.py`), so a cancel and a worker never both win: a job
canceled while queued is never started, and a job that finished is never canceled.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from redis import Redis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline
from redis.exceptions import WatchError

from core import job_scripts, keys
from core.eta import job_work
from core.events import (
    TERMINAL_EVENT_TYPES,
    AnyEvent,
    CanceledEvent,
    ExpiredEvent,
    FailedEvent,
    QueuedEvent,
    RequeuedEvent,
    StartedEvent,
    SucceededEvent,
)
from core.job_index import add_to_index
from core.queueing import JobQueue, model_queue
from core.schemas import GenerateRequest, Job, JobError, JobStatus, Progress, Provenance, Timings
from core.settings import Settings


class CancelOutcome(StrEnum):
    """What `DELETE /jobs/{id}` did."""

    CANCELED = "canceled"  # it was queued: it left the queue and will never run
    REQUESTED = "cancel_requested"  # it is running: it stops at the next step boundary
    FINISHED = "finished"  # it had already ended: nothing to cancel
    UNKNOWN = "unknown"


class StepSignal(StrEnum):
    """What a running job's progress write says back to its worker."""

    GO = "go"
    CANCEL = "cancel"  # a cancel was requested: stop at this step
    LOST = "lost"  # this attempt no longer owns the job (re-queued meanwhile): stop, write nothing more


@dataclass(frozen=True)
class Claim:
    """The outcome of a worker's claim of a job: the attempt it now runs (the fence of its later writes), or why not:
    `gone` (another claimant took it, or its record is gone), `expired` (ended here: it waited too long), or the status
    the job had (`canceled`...)."""

    outcome: str
    attempt: int | None = None

    def __bool__(self) -> bool:
        return self.attempt is not None


def _now() -> float:
    return time.time()


def _ts(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=UTC) if value else None


def image_url(job_id: str, index: int) -> str:
    """Path under which the API serves a job's `index`-th image."""
    return f"/jobs/{job_id}/images/{index}"


class JobStore:
    """Reads and writes job records, their event streams, result images and their TTLs."""

    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl: int,
        queue_ttl: int,
        job_timeout: int,
        events_max_len: int = 1000,
        max_attempts: int = 3,
    ) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.queue_ttl = queue_ttl
        self.job_timeout = job_timeout
        self.events_max_len = events_max_len
        # The longest a record lives: each attempt may wait out its queue TTL and run to its timeout, then the result
        # is kept. The listing indexes keep their entries that long.
        self.longest_life = max_attempts * (queue_ttl + job_timeout) + result_ttl
        self._append = redis.register_script(job_scripts.APPEND)
        self._transition = redis.register_script(job_scripts.TRANSITION)
        self._cancel = redis.register_script(job_scripts.CANCEL)
        self._claim = redis.register_script(job_scripts.CLAIM)
        self._step = redis.register_script(job_scripts.STEP)
        self._note = redis.register_script(job_scripts.NOTE)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> JobStore:
        """A store with the TTLs and caps of `settings`."""
        return cls(
            redis,
            result_ttl=settings.result_ttl_seconds,
            queue_ttl=settings.queue_ttl_seconds,
            job_timeout=settings.job_timeout_seconds,
            events_max_len=settings.events_max_len,
            max_attempts=settings.max_attempts,
        )

    # --- the API's side -------------------------------------------------------------------------------------

    def create(
        self,
        job_id: str,
        model: str,
        request: GenerateRequest,
        *,
        owner: str | None = None,
        inputs: dict[str, bytes] | None = None,
        pipeline: Pipeline | AsyncPipeline | None = None,
    ) -> Job:
        """Write the record, input images and `queued` event of a new job and put it on its model's queue, in one
        transaction (the caller's, when given: it must have started MULTI; an asyncio one, the API's, is only added
        to here, and its caller awaits its `execute()`): a job exists only in its queue. They live long enough to wait,
        run and be read."""
        if request.seed is None:
            raise ValueError("assign the seed before creating the job")
        now = _now()
        queue_ttl = self.job_queue_ttl(request)
        fields: dict[str, object] = {
            "id": job_id,
            "status": JobStatus.QUEUED.value,
            "model": model,
            "request": request.model_dump_json(),
            "seed": request.seed,
            "created_at": now,
            "expires_at": now + queue_ttl,
            "step": 0,
            "total": request.steps,
            "work": job_work(request),
            "attempts": 0,
        }
        if request.webhook_url:
            fields["webhook_url"] = request.webhook_url
            fields["webhook_events"] = ",".join(request.webhook_events)
        if owner:
            fields["owner"] = owner
            fields["active_key"] = keys.api_key_active_jobs_key(owner)
        ttl = queue_ttl + self.job_timeout + self.result_ttl
        pipe = pipeline if pipeline is not None else self.redis.pipeline(transaction=True)
        if pipeline is None:
            pipe.multi()  # RQ's enqueue expects MULTI on a pipeline that already has commands
        pipe.hset(keys.job_key(job_id), mapping=fields)
        pipe.expire(keys.job_key(job_id), ttl)
        pipe.zadd(keys.queue_deadlines_key(), {job_id: now + queue_ttl})
        add_to_index(pipe, job_id, owner, now, self.longest_life)
        for field, data in (inputs or {}).items():
            pipe.set(keys.job_input_key(job_id, field), data, ex=ttl)
        if owner:
            pipe.sadd(keys.api_key_active_jobs_key(owner), job_id)
            pipe.expire(keys.api_key_active_jobs_key(owner), ttl)
        queued = QueuedEvent(model=model)
        if request.webhook_url and queued.type in request.webhook_events:
            self._add_event(pipe, job_id, queued)  # the script also queues the webhook delivery
        else:  # a plain XADD: a script in a pipeline costs a SCRIPT EXISTS on top
            event = {"type": queued.type, "data": queued.model_dump_json()}
            pipe.xadd(keys.job_events_key(job_id), event, maxlen=self.events_max_len, approximate=True)
        pipe.expire(keys.job_events_key(job_id), ttl)
        model_queue(self.redis, model).enqueue(job_id, pipeline=pipe)
        if pipeline is None:
            pipe.execute()
        return self.job_from_record({k: str(v) for k, v in fields.items()}, request)

    def job_queue_ttl(self, request: GenerateRequest) -> int:
        """How long a job may wait in the queue: its own `queue_ttl_seconds`, at most the server's."""
        return min(request.queue_ttl_seconds or self.queue_ttl, self.queue_ttl)

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job: a queued one at once (and out of its queue), a running one at its next step; a finished one
        is left alone."""
        result = self._cancel(
            keys=[
                keys.job_key(job_id),
                keys.job_events_key(job_id),
                keys.running_jobs_key(),
                keys.webhook_deliveries_key(),
            ],
            args=[job_id, _now(), self.result_ttl, self.events_max_len, CanceledEvent().model_dump_json()],
        )
        if result is None:
            return CancelOutcome.UNKNOWN
        if result == b"dequeued":
            # The record says canceled already, so a worker that takes the id meanwhile skips it.
            model = self.redis.hget(keys.job_key(job_id), "model")
            if model is not None:
                model_queue(self.redis, model.decode()).remove(job_id)
            return CancelOutcome.CANCELED
        return CancelOutcome.REQUESTED if result == b"requested" else CancelOutcome.FINISHED

    # --- the worker's side ----------------------------------------------------------------------------------

    def claim(
        self,
        job_id: str,
        worker_id: str,
        total_steps: int,
        provenance: Provenance | None = None,
        *,
        dequeued: bool = False,
        queue: JobQueue | None = None,
        batch_size: int | None = None,
    ) -> Claim:
        """Take a queued job for `worker_id` and start it, atomically: off its list (RQ's intermediate list when the
        worker's queue loop `dequeued` it, else the queue itself: a batch mate), `running` under this worker, one more
        attempt (the fence of the run's later writes), `started` event. A job whose queue deadline passed ends
        `expired` instead. See `Claim` for the outcomes. `queue`: the job's model's, when the caller knows it (else it
        is read from the record); `batch_size`: recorded with the claim (see `note_batch`)."""
        if queue is None:
            model = self.redis.hget(keys.job_key(job_id), "model")
            if model is None:
                return Claim("gone")
            queue = model_queue(self.redis, model.decode())
        fields: dict[str, object] = {"total": total_steps}
        if provenance is not None:
            fields["provenance"] = provenance.model_dump_json()
        if batch_size is not None:
            fields["batch_size"] = batch_size
        args: list[object] = [job_id, worker_id, _now(), self.job_timeout + self.result_ttl, self.events_max_len]
        args += [StartedEvent(worker_id=worker_id, total=total_steps).model_dump_json()]
        args += [ExpiredEvent().model_dump_json(), self.result_ttl]
        for name, value in fields.items():
            args.extend([name, value])
        result = self._claim(
            keys=[
                keys.job_key(job_id),
                keys.job_events_key(job_id),
                keys.running_jobs_key(),
                keys.webhook_deliveries_key(),
                queue.intermediate_key if dequeued else queue.key,
                keys.queue_deadlines_key(),
            ],
            args=args,
        )
        if isinstance(result, int):
            return Claim("claimed", result)
        return Claim(result.decode())

    def queued_request(self, job_id: str) -> tuple[str | None, tuple[float, float] | None]:
        """The job's request as stored (JSON; None when the record is gone) and its `queue_times`, in one read."""
        request, created, expires = self.redis.hmget(keys.job_key(job_id), ["request", "created_at", "expires_at"])
        times = (float(created), float(expires)) if created is not None and expires is not None else None
        return (request.decode() if request is not None else None), times

    def queue_times(self, job_id: str) -> tuple[float, float] | None:
        """(when the job was accepted, when it expires if not started), epoch seconds; None when unknown."""
        created, expires = self.redis.hmget(keys.job_key(job_id), ["created_at", "expires_at"])
        if created is None or expires is None:
            return None
        return float(created), float(expires)

    def report_step(
        self,
        job_id: str,
        step: int,
        total: int,
        eta_seconds: float,
        event: AnyEvent | None,
        attempt: int | None = None,
    ) -> StepSignal:
        """Record progress (and publish `event`, if any) for the run `attempt` (None: unfenced); says whether to go
        on, stop for a requested cancel, or stop because the job moved on without this run."""
        args: list[object] = ["" if attempt is None else attempt, step, total, round(eta_seconds, 3)]
        args += [self.events_max_len, job_id, event.type if event else "", event.model_dump_json() if event else ""]
        result = self._step(
            keys=[keys.job_key(job_id), keys.job_events_key(job_id), keys.webhook_deliveries_key()], args=args
        )
        return StepSignal(result.decode())

    def note_batch(self, runs: list[tuple[str, int]]) -> None:
        """Record on each running job (id, the attempt that runs it) how many jobs share its pipeline call."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, attempt in runs:
            self._note(keys=[keys.job_key(job_id)], args=[attempt, "batch_size", len(runs)], client=pipe)
        pipe.execute()

    def publish(self, job_id: str, event: AnyEvent, attempt: int | None = None) -> None:
        """Append a non-terminal event (a preview, say) to the job's stream, if the run `attempt` still owns it."""
        pipe = self.redis.pipeline(transaction=False)
        self._add_event(pipe, job_id, event, attempt)
        pipe.execute()

    def cancel_requested(self, job_id: str) -> bool:
        """True once `cancel` asked the running job to stop."""
        return bool(self.redis.hexists(keys.job_key(job_id), "cancel_requested"))

    def mark_succeeded(
        self,
        job_id: str,
        images: list[bytes],
        content_filtered: list[bool] | None = None,
        attempt: int | None = None,
        *,
        stored: int | None = None,
    ) -> bool:
        """Store the images and end the job `succeeded` (with which images a safety checker filtered, if one ran);
        False when it had already ended or, given the run's `attempt`, moved on without it (then nothing changes, its
        images included). `stored`: the number of images the run already put in the object store (`images` is then
        empty; core/object_store.py)."""
        count = len(images) if stored is None else stored
        urls = [image_url(job_id, i) for i in range(count)]
        filtered = content_filtered if content_filtered and any(content_filtered) else []
        result = self._run_transition(
            job_id,
            allowed=(JobStatus.RUNNING,),
            new=JobStatus.SUCCEEDED,
            ttl=self.result_ttl,
            event=SucceededEvent(images=urls, content_filtered=filtered),
            fields={
                "finished_at": _now(),
                "images": json.dumps(urls),
                "content_filtered": json.dumps(filtered),
                "eta": 0,
            },
            images=images,
            attempt=attempt,
        )
        return result == JobStatus.SUCCEEDED.value

    def mark_failed(self, job_id: str, worker_id: str, code: str, message: str, attempt: int | None = None) -> bool:
        """End a queued or running job `failed` with a stable code; False when it had already ended (or, given the
        run's `attempt`, moved on without it)."""
        error = JobError(code=code, message=message)
        result = self._run_transition(
            job_id,
            allowed=(JobStatus.QUEUED, JobStatus.RUNNING),
            new=JobStatus.FAILED,
            ttl=self.result_ttl,
            event=FailedEvent(code=code, message=message),
            fields={"finished_at": _now(), "worker_id": worker_id, "error": error.model_dump_json()},
            attempt=attempt,
        )
        return result == JobStatus.FAILED.value

    def mark_canceled(self, job_id: str, step: int | None, attempt: int | None = None) -> bool:
        """End a running job `canceled` (its cancel was requested); False when it had already ended (or, given the
        run's `attempt`, moved on without it)."""
        result = self._run_transition(
            job_id,
            allowed=(JobStatus.RUNNING,),
            new=JobStatus.CANCELED,
            ttl=self.result_ttl,
            event=CanceledEvent(step=step),
            fields={"finished_at": _now()},
            attempt=attempt,
        )
        return result == JobStatus.CANCELED.value

    def mark_expired(self, job_id: str) -> bool:
        """End a job that waited in the queue past its queue TTL; False when it was no longer queued."""
        result = self._run_transition(
            job_id,
            allowed=(JobStatus.QUEUED,),
            new=JobStatus.EXPIRED,
            ttl=self.result_ttl,
            event=ExpiredEvent(),
            fields={"finished_at": _now()},
        )
        return result == JobStatus.EXPIRED.value

    def requeue(self, job_id: str, lost_worker: str, attempt: int, reason: str) -> bool:
        """Put a running job whose worker was lost back at the front of its model's queue; False if it moved
        meanwhile."""
        key = keys.job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                status, worker_id, model = pipe.hmget(key, ["status", "worker_id", "model"])
                if status != JobStatus.RUNNING.value.encode() or (worker_id or b"").decode() != lost_worker:
                    return False
                pipe.multi()
                deadline = _now() + self.queue_ttl
                fields = {"status": JobStatus.QUEUED.value, "worker_id": "", "started_at": "", "step": 0}
                pipe.hset(key, mapping={**fields, "expires_at": deadline})
                pipe.zadd(keys.queue_deadlines_key(), {job_id: deadline})
                pipe.hdel(key, "cancel_requested")
                pipe.srem(keys.running_jobs_key(), job_id)
                self._add_event(pipe, job_id, RequeuedEvent(attempt=attempt, reason=reason))
                model_queue(self.redis, model.decode()).enqueue(job_id, at_front=True, pipeline=pipe)
                pipe.execute()
            except WatchError:
                return False
        return True

    def add_warning(self, job_id: str, warning: str) -> None:
        """Attach a warning to the job record (e.g. a prompt truncated to the text encoder's window)."""
        key = keys.job_key(job_id)
        current = json.loads(self.redis.hget(key, "warnings") or "[]")
        self.redis.hset(key, "warnings", json.dumps([*current, warning]))

    # --- reads ----------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job's record, or None when unknown or expired."""
        return self.job_from_hash(self.redis.hgetall(keys.job_key(job_id)))

    def get_image(self, job_id: str, index: int) -> bytes | None:
        """Bytes of a result image, or None when absent or expired."""
        data = self.redis.get(keys.job_image_key(job_id, index))
        return bytes(data) if data is not None else None

    def get_inputs(self, job_id: str, fields: list[str]) -> dict[str, bytes]:
        """The stored input images of a job, by field; a field whose bytes are gone is left out."""
        values = self.redis.mget([keys.job_input_key(job_id, field) for field in fields]) if fields else []
        return {field: bytes(value) for field, value in zip(fields, values, strict=True) if value is not None}

    def requests(self, job_ids: list[str]) -> list[GenerateRequest | None]:
        """The request of each job (None for a job that is gone)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job_key(job_id), "request")
        return [GenerateRequest.model_validate_json(raw) if raw else None for raw in pipe.execute()]

    def running_jobs(self, model: str) -> list[str]:
        """Ids of the running jobs of `model`."""
        ids = [raw.decode() for raw in self.redis.smembers(keys.running_jobs_key())]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job_key(job_id), "model")
        return [job_id for job_id, owner in zip(ids, pipe.execute(), strict=True) if owner == model.encode()]

    def work_left(self, job_ids: list[str]) -> list[float]:
        """For each job, the work it still has to do (all of it while queued; the rest of it while running)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job_key(job_id), ["work", "step", "total"])
        left = []
        for work, step, total in pipe.execute():
            if work is None:
                continue  # expired or canceled meanwhile
            done = int(step or 0) / int(total) if total and int(total) else 0.0
            left.append(float(work) * (1.0 - done))
        return left

    # --- internals ------------------------------------------------------------------------------------------

    def _add_event(
        self, pipe: Pipeline | AsyncPipeline, job_id: str, event: AnyEvent, attempt: int | None = None
    ) -> None:
        script_keys = [keys.job_key(job_id), keys.job_events_key(job_id), keys.webhook_deliveries_key()]
        args: list[str | int] = [
            self.events_max_len,
            job_id,
            event.type,
            event.model_dump_json(),
            "" if attempt is None else attempt,
        ]
        if isinstance(pipe, AsyncPipeline):
            # What the sync `Script` does on a sync pipeline: the pipeline loads it, if missing, before its EXEC.
            pipe.scripts.add(self._append)  # type: ignore[arg-type]  # it reads only `sha` and `script`
            pipe.evalsha(self._append.sha, len(script_keys), *script_keys, *args)
            return
        self._append(keys=script_keys, args=args, client=pipe)

    def _run_transition(
        self,
        job_id: str,
        *,
        allowed: tuple[JobStatus, ...],
        new: JobStatus,
        ttl: int,
        event: AnyEvent,
        fields: dict[str, object],
        images: list[bytes] | None = None,
        attempt: int | None = None,
    ) -> str | None:
        assert (event.type in TERMINAL_EVENT_TYPES) == new.is_terminal()
        images = images or []
        allowed_csv = ",".join(s.value for s in allowed)
        args: list[object] = [allowed_csv, new.value, ttl, self.events_max_len, job_id, event.type]
        args += [event.model_dump_json(), "" if attempt is None else attempt, len(images), *images]
        for name, value in fields.items():
            args.extend([name, value])
        job_keys = [
            keys.job_key(job_id),
            keys.job_events_key(job_id),
            keys.running_jobs_key(),
            keys.webhook_deliveries_key(),
            *(keys.job_image_key(job_id, index) for index in range(len(images))),
        ]
        result = self._transition(keys=job_keys, args=args)
        return result.decode() if result is not None else None

    @classmethod
    def job_from_hash(cls, raw: dict[bytes, bytes]) -> Job | None:
        """The job of a record as HGETALL answers it (on either client), or None for none (unknown or expired)."""
        return cls.job_from_record({k.decode(): v.decode() for k, v in raw.items()}) if raw else None

    @staticmethod
    def job_from_record(fields: dict[str, str], request: GenerateRequest | None = None) -> Job:
        """The job of a record as Redis holds it (field -> value, decoded); `request`: its `request` field already
        parsed (a poller's cache), else parsed here."""
        error = fields.get("error")
        created = _ts(fields["created_at"])
        assert created is not None
        status = JobStatus(fields["status"])
        eta = fields.get("eta")
        return Job(
            id=fields["id"],
            status=status,
            model=fields["model"],
            request=request if request is not None else GenerateRequest.model_validate_json(fields["request"]),
            seed=int(fields["seed"]),
            progress=Progress(step=int(fields.get("step", 0)), total=int(fields.get("total", 0))),
            eta_seconds=float(eta) if eta is not None and status is JobStatus.RUNNING else None,
            cancel_requested="cancel_requested" in fields,
            attempts=int(fields.get("attempts", 0)),
            batch_size=int(fields["batch_size"]) if fields.get("batch_size") else None,
            warnings=json.loads(fields.get("warnings", "[]")),
            provenance=Provenance.model_validate_json(fields["provenance"]) if fields.get("provenance") else None,
            timings=Timings(
                created_at=created,
                started_at=_ts(fields.get("started_at")),
                finished_at=_ts(fields.get("finished_at")),
            ),
            images=json.loads(fields.get("images", "[]")),
            content_filtered=json.loads(fields.get("content_filtered", "[]")),
            error=JobError.model_validate_json(error) if error else None,
            worker_id=fields.get("worker_id") or None,
            owner=fields.get("owner") or None,
        )
