"""The job lifecycle inside a worker: admit, claim, batch, generate, then encode and store off the GPU's path; or
cancel, expire, or fail with a stable code.

Every write a run makes after its claim is fenced by its attempt (`core/job_scripts.py`): if the job moved on without
it (a sweeper re-queued it while this worker was cut off from Redis), the run stops and its result is discarded. A
Redis outage never kills a run: progress writes are skipped while Redis is away, and the outcome (the encoded images,
or the failure) is kept in memory and written when Redis is back, for up to `IMAGEGEN_OUTAGE_HOLD_SECONDS`; past that
the run lets go and the sweep re-queues the job.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from PIL import Image
from pydantic import ValidationError
from redis.exceptions import RedisError
from rq.timeouts import JobTimeoutException

from core.eta import job_work
from core.jobs import JobStore, StepSignal
from core.logs import bound_job
from core.object_store import ResultStoreUnavailableError, image_store, schedule_deletion
from core.queueing import model_queue
from core.schemas import GenerateRequest, LimitExceededError, check_limits
from core.settings import Settings
from core.speed import record_speed
from worker import metrics
from worker.batching import select_batch, split_counts
from worker.encoding import a1111_parameters, encode_image
from worker.health import WorkerState, WorkerStatus
from worker.pipeline.resident import Generation, Latents, ResidentPipeline
from worker.step_reporter import StepReporter

log = logging.getLogger(__name__)

# Queued jobs looked at for batch mates, from the head of the queue.
BATCH_LOOKAHEAD = 64


def error_code(exc: BaseException) -> str:
    """The stable code a job failure reports for an exception."""
    if ResidentPipeline.is_out_of_memory(exc):
        return "out_of_memory"
    if isinstance(exc, JobTimeoutException):
        return "timeout"
    if isinstance(exc, ResultStoreUnavailableError):
        return "result_store_unavailable"
    if isinstance(exc, ValidationError | LimitExceededError | ValueError):
        return "invalid_request"
    return "internal"


@dataclass
class ActiveJob:
    """A job this worker claimed: its request, the attempt it runs (the fence of its writes), its step reporter."""

    job_id: str
    request: GenerateRequest
    attempt: int
    reporter: StepReporter
    inputs: dict[str, Image.Image]


class GenerationEngine:
    """Owns the resident pipeline and runs batches of compatible jobs on it, in the worker's main thread; encoding
    and storing results happen on a background thread so the next batch starts at once."""

    def __init__(
        self, resident: ResidentPipeline, store: JobStore, settings: Settings, worker_id: str, status: WorkerStatus
    ) -> None:
        self.resident = resident
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.status = status
        self.model_name = settings.served_model_name()
        self.queue = model_queue(store.redis, self.model_name)
        self.images = image_store(settings, store.redis)  # Redis (the bytes go with the job's writes) or a bucket
        # One thread: results are stored in the order they were made, and the GPU thread never waits for PNG or Redis.
        self.finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagegen-finish")
        self._pending: list[Future[None]] = []

    def warm_up(self) -> None:
        """One short generation at the model's native size, so the first request pays no start-up cost."""
        self.resident.warm_up(self.settings.warmup_steps)

    def drain(self) -> None:
        """Wait until every result being encoded or stored so far is written."""
        pending, self._pending = self._pending, []
        wait(pending)

    def close(self) -> None:
        """Write what is pending and stop the background thread."""
        self.drain()
        self.finisher.shutdown(wait=True)

    def run(self, job_id: str) -> None:
        """Run one job the worker's queue loop dequeued (moved to RQ's intermediate list; its request is read from the
        job record), with compatible queued jobs as batch mates, each to a terminal state (results may still be being
        stored when this returns); failures are recorded on the jobs, never raised."""
        self.status.state = WorkerState.BUSY
        metrics.WORKER_BUSY.labels(self.model_name).set(1)
        try:
            first = self._admit(job_id, dequeued=True)
            if first is not None:
                batch = [first, *self._claim_batch_mates(first.request)]
                self._run_batch(batch)
        finally:
            self.status.state = WorkerState.READY
            metrics.WORKER_BUSY.labels(self.model_name).set(0)

    # --- admission ------------------------------------------------------------------------------------------

    def _admit(
        self, job_id: str, request: GenerateRequest | None = None, *, dequeued: bool = False
    ) -> ActiveJob | None:
        """Claim the job and start it, or settle it (expired, canceled meanwhile, invalid) and return None.
        `request`: the job's, when already read from its record; `dequeued`: taken by the queue loop (else a batch
        mate, claimed off the queue)."""
        with bound_job(job_id):
            self.status.admitted(job_id)  # every way out of here, or of the run, settles it once (`_count`)
            problem: Exception | None = None  # settled as `failed` once claimed, so that only the claimant writes it
            total, record, inputs, times = 0, None, {}, None
            try:
                if request is None:
                    stored, times = self.store.queued_request(job_id)  # one read and one validation per job
                    try:
                        request = GenerateRequest.model_validate_json(stored) if stored is not None else None
                    except ValidationError as exc:  # written by an older or newer API
                        problem = exc
                    if stored is None:
                        log.info("job skipped: its record is gone (expired)")
                        self._count(job_id, "skipped")
                        return None
                else:
                    times = self.store.queue_times(job_id)
                if request is not None:
                    try:
                        check_limits(request, max_pixels=self.settings.max_pixels)
                        total, record = self.resident.admit(request, self.model_name)
                        inputs = self._load_inputs(job_id, request)
                    except RedisError:
                        raise
                    except Exception as exc:
                        problem = exc
                claim = self.store.claim(
                    job_id,
                    self.worker_id,
                    total,
                    record,
                    dequeued=dequeued,
                    queue=self.queue,
                    batch_size=1 if dequeued else None,  # alone unless mates join: `_run_batch` then notes them all
                )
            except RedisError as exc:
                # Not claimed, or claimed and then let go: either way the sweep gives it back (unclaimed in the
                # intermediate list, or running with a heartbeat that no longer names it).
                log.warning("job not started: Redis unavailable (%s)", exc)
                self._count(job_id, "skipped")
                return None
            if not claim:
                outcome = "expired" if claim.outcome == "expired" else "skipped"
                log.info("job not started: %s", claim.outcome)
                self._count(job_id, outcome)
                return None
            assert claim.attempt is not None
            if problem is not None or request is None:
                self._fail(job_id, problem or ValueError("no request"), claim.attempt)
                return None
            if times is not None:
                self._observe("queue_wait", time.time() - times[0])
            self._warn_truncated_prompts(job_id, request)
        reporter = StepReporter(
            self.store,
            job_id,
            attempt=claim.attempt,
            events_per_second=self.settings.step_events_per_second,
            preview_every=request.preview_every,
            preview=self.resident.preview,
        )
        return ActiveJob(job_id, request, claim.attempt, reporter, inputs)

    def _load_inputs(self, job_id: str, request: GenerateRequest) -> dict[str, Image.Image]:
        """Decode the input images the API stored beside the job (it checked them already)."""
        fields = list(request.image_fields())
        if self.images.inline:
            stored = self.store.get_inputs(job_id, fields)
        else:
            objects = {field: self.images.get(self.images.input_key(job_id, field)) for field in fields}
            stored = {field: data for field, data in objects.items() if data is not None}
        missing = [field for field in fields if field not in stored]
        if missing:
            raise ValueError(f"{', '.join(missing)}: the stored input image is gone (expired)")
        images: dict[str, Image.Image] = {}
        for field, data in stored.items():
            image = Image.open(io.BytesIO(data))
            image.load()
            images[field] = image
        return images

    def _claim_batch_mates(self, first: GenerateRequest) -> list[ActiveJob]:
        """Take compatible jobs off the queue (waiting up to `batch_wait_ms` for them) and start them."""
        mates: list[ActiveJob] = []
        if first.reproducible:
            return mates  # it runs alone (worker/batching.py)
        jobs_left = self.settings.max_batch - 1
        images_left = self.settings.max_batch_images - first.num_images
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while jobs_left > 0 and images_left > 0:
            try:
                compatible = self._compatible_queued(first, jobs_left, images_left + first.num_images)
            except RedisError:
                break  # run what is claimed already
            for job_id, request in compatible:
                mate = self._admit(job_id, request)  # None when another worker claimed it first
                if mate is not None:
                    mates.append(mate)
                    jobs_left -= 1
                    images_left -= request.num_images
            if time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        return mates

    def _compatible_queued(self, first: GenerateRequest, jobs: int, images: int) -> list[tuple[str, GenerateRequest]]:
        ids = self.queue.peek(BATCH_LOOKAHEAD)
        if not ids:
            return []
        candidates = [
            (job_id, request) for job_id, request in zip(ids, self.store.requests(ids), strict=True) if request
        ]
        chosen = set(select_batch(first, candidates, max_jobs=jobs + 1, max_images=images))
        return [(job_id, request) for job_id, request in candidates if job_id in chosen]

    # --- the pipeline call ----------------------------------------------------------------------------------

    def _run_batch(self, batch: list[ActiveJob]) -> None:
        try:
            if len(batch) > 1:  # a job alone recorded its batch size of 1 with its claim
                self.store.note_batch([(job.job_id, job.attempt) for job in batch])
        except RedisError:
            log.warning("batch size not recorded: Redis unavailable")
        requests = [job.request for job in batch]
        parts = split_counts(requests)
        live = {job.job_id for job in batch}

        def on_step(step: int, total: int, latents: Latents) -> bool:
            for job, part in zip(batch, parts, strict=True):
                if job.job_id not in live:
                    continue
                signal = job.reporter(step, total, latents[part])
                if signal is StepSignal.CANCEL:
                    live.discard(job.job_id)
                    self._cancel(job, step)
                elif signal is StepSignal.LOST:
                    live.discard(job.job_id)
                    self._let_go(job.job_id, "the job moved on without this run (re-queued while Redis was away)")
            return not live  # stop the loop once no job of the batch is left to run

        metrics.BATCH_SIZE.labels(self.model_name).observe(sum(r.num_images for r in requests))
        try:
            # A batch shares its LoRA adapters (worker/batching.py): the first request's apply to all.
            generation = self.resident.generate(
                requests, on_step, [job.inputs for job in batch], self.settings.long_prompts
            )
        except Exception as exc:
            for job in batch:
                if job.job_id in live:
                    with bound_job(job.job_id):
                        self._fail(job.job_id, exc, job.attempt)
            return
        denoise_seconds = self._observe_device_time(generation)
        if not live:
            self.resident.release_memory()
            return
        try:
            record_speed(self.store.redis, self.model_name, denoise_seconds, sum(job_work(r) for r in requests))
        except RedisError:
            log.warning("speed not recorded: Redis unavailable")
        for job, job_images in zip(batch, generation.images, strict=True):
            if job.job_id in live:
                self._pending = [f for f in self._pending if not f.done()]
                self._pending.append(self.finisher.submit(self._finish, job, job_images))

    def _finish(self, job: ActiveJob, images: list[Image.Image]) -> None:
        """Encode and store one job's images (on the finisher thread), holding them through a Redis outage."""
        with bound_job(job.job_id):
            try:
                started = time.perf_counter()
                request = job.request
                encoded = [
                    encode_image(
                        image,
                        request.output_format,
                        parameters=a1111_parameters(request, seed, self.model_name, self.resident.family),
                        quality=request.output_quality,
                    )
                    for image, seed in zip(images, request.image_seeds(), strict=True)
                ]
                self._observe("image_encode", time.perf_counter() - started)
                started = time.perf_counter()
                filtered = [self.resident.is_filtered(image) for image in images]
                if any(filtered):
                    log.warning("safety checker filtered images", extra={"filtered": filtered})
                if self.images.inline:
                    stored = self._persist(
                        "result", lambda: self.store.mark_succeeded(job.job_id, encoded, filtered, job.attempt)
                    )
                else:
                    stored = self._put_objects(job, encoded, filtered)
            except Exception as exc:
                self._fail(job.job_id, exc, job.attempt)
                return
            self._observe("store", time.perf_counter() - started)
            if stored:
                metrics.IMAGES.labels(self.model_name).inc(len(encoded))
                log.info("job succeeded", extra={"images": len(encoded)})
                self._count(job.job_id, "succeeded")
            elif stored is False:
                self._let_go(job.job_id, "result discarded: the job ended or moved on without this run")
            else:
                self._let_go(job.job_id, "result discarded: Redis stayed away past the hold time")

    def _put_objects(self, job: ActiveJob, encoded: list[bytes], filtered: list[bool]) -> bool | None:
        """Put the images in the bucket, then end the job with the fenced transition (which records only how many
        there are); a run that lost its job deletes what it put. ResultStoreUnavailableError once the store's bounded
        tries are spent. The objects are scheduled for deletion first, so none outlives the result TTL for long."""
        output_format = job.request.output_format
        names = [self.images.result_key(job.job_id, job.attempt, i, output_format.value) for i in range(len(encoded))]
        # Past the record's own expiry (the transition sets it later, by up to the outage hold).
        delete_at = time.time() + self.settings.result_ttl_seconds + self.settings.outage_hold_seconds

        def schedule() -> bool:
            schedule_deletion(self.store.redis, names, delete_at)
            return True

        if not self._persist("object expiry", schedule):
            return None
        for name, data in zip(names, encoded, strict=True):
            self.images.put(name, data, output_format.content_type)
        stored = self._persist(
            "result",
            lambda: self.store.mark_succeeded(job.job_id, [], filtered, job.attempt, stored=len(encoded)),
        )
        if not stored:
            try:
                self.images.delete(names)  # the winner's objects live under its own attempt: these are ours only
            except ResultStoreUnavailableError as exc:
                log.warning("objects of a discarded result left to the expiry sweep: %s", exc)
        return stored

    # --- outcomes -------------------------------------------------------------------------------------------

    def _persist(self, what: str, write: Callable[[], bool]) -> bool | None:
        """Run one write of a job's outcome, retrying with backoff while Redis is away, for up to
        `outage_hold_seconds`: its result (False when the job had moved on), or None when Redis never came back."""
        deadline = time.monotonic() + self.settings.outage_hold_seconds
        delay = 0.25
        while True:
            try:
                return write()
            except RedisError as exc:
                if time.monotonic() + delay > deadline:
                    log.error("could not write the job's %s: Redis unavailable (%s); giving the job up", what, exc)
                    return None
                log.warning("Redis unavailable while writing the job's %s (%s); retrying in %.2fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _cancel(self, job: ActiveJob, step: int) -> None:
        with bound_job(job.job_id):
            if self._persist("cancel", lambda: self.store.mark_canceled(job.job_id, step, job.attempt)):
                log.info("job canceled", extra={"step": step})
                self._count(job.job_id, "canceled")
            else:
                self._let_go(job.job_id, "cancel not recorded: the job ended or moved on without this run")

    def _fail(self, job_id: str, exc: Exception, attempt: int) -> None:
        code = error_code(exc)
        log.exception("job failed", extra={"code": code})
        message = str(exc) or type(exc).__name__
        try:
            if not self._persist(
                "failure", lambda: self.store.mark_failed(job_id, self.worker_id, code, message, attempt)
            ):
                log.warning("failure not recorded: the job ended or moved on without this run")
        finally:
            self._count(job_id, "failed")
            if code == "out_of_memory":
                self.resident.release_memory()

    def _let_go(self, job_id: str, reason: str) -> None:
        """Stop caring for a job this run no longer owns (the sweep re-queues it if nobody else runs it)."""
        log.warning(reason)
        self._count(job_id, "lost")

    def _count(self, job_id: str, outcome: str) -> None:
        self.status.settled(job_id)
        metrics.JOBS.labels(self.model_name, outcome).inc()

    # --- measurements ---------------------------------------------------------------------------------------

    def _warn_truncated_prompts(self, job_id: str, request: GenerateRequest) -> None:
        """Record a warning on the job when a prompt is longer than the text encoder's window (it gets truncated)."""
        for warning in self.resident.truncation_warnings(request, self.settings.long_prompts):
            log.warning(warning)
            try:
                self.store.add_warning(job_id, warning)
            except RedisError:
                log.warning("warning not recorded on the job: Redis unavailable")

    def _observe_device_time(self, generation: Generation) -> float:
        """Record each step and phase of the pipeline call; returns the denoising time."""
        step_histogram = metrics.DENOISE_STEP_SECONDS.labels(self.model_name)
        for seconds in generation.step_seconds:
            step_histogram.observe(seconds)
        phases = generation.phase_seconds
        for phase, seconds in phases.items():
            self._observe(phase, seconds)
        return phases.get("denoise", 0.0)

    def _observe(self, phase: str, seconds: float) -> None:
        metrics.JOB_PHASE_SECONDS.labels(self.model_name, phase).observe(seconds)
        log.info("phase done", extra={"phase": phase, "seconds": round(seconds, 6)})
