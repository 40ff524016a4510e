"""The job lifecycle inside a worker: start, generate, encode, store; or cancel, or fail with a stable code."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from pydantic import ValidationError

from core.eta import job_work
from core.jobs import JobStore
from core.logs import bound_job
from core.schemas import GenerateRequest, LimitExceededError, check_limits
from core.settings import Settings
from core.speed import record_speed
from worker import metrics
from worker.encoding import encode_image
from worker.generation import generate_images
from worker.health import WorkerState, WorkerStatus
from worker.loading import LoadedModel
from worker.previews import latent_family
from worker.progress import StepReporter
from worker.samplers import denoising_iterations
from worker.timing import DeviceClock, PhaseTimer, PipelineTimers

log = logging.getLogger(__name__)


def error_code(exc: BaseException) -> str:
    """The stable code a job failure reports for an exception."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return "out_of_memory"
    if isinstance(exc, ValidationError | LimitExceededError | ValueError):
        return "invalid_request"
    return "internal"


class GenerationEngine:
    """Owns the resident pipeline and runs jobs on it, one at a time, in the worker's main thread."""

    def __init__(
        self, model: LoadedModel, store: JobStore, settings: Settings, worker_id: str, status: WorkerStatus
    ) -> None:
        self.model = model
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.status = status
        self.model_name = settings.served_model_name()
        self.base_scheduler_config: dict[str, Any] = dict(model.pipeline.scheduler.config)
        vae_config = model.pipeline.vae.config
        self.latent_family = latent_family(vae_config.scaling_factor, vae_config.latent_channels)
        self.timers = PipelineTimers(model.pipeline, DeviceClock(model.device))

    def warm_up(self) -> None:
        """One short generation at the model's native size, so the first request pays no start-up cost."""
        if self.settings.warmup_steps == 0:
            return
        pipeline = self.model.pipeline
        side = int(pipeline.unet.config.sample_size * pipeline.vae_scale_factor)
        request = GenerateRequest(prompt="warm-up", width=side, height=side, steps=self.settings.warmup_steps, seed=0)
        generate_images(pipeline, self.base_scheduler_config, request)

    def run(self, job_id: str, payload: dict[str, Any]) -> None:
        """Run one queued job to a terminal state; any failure is recorded on the job, never raised."""
        self.status.state, self.status.current_job = WorkerState.BUSY, job_id
        metrics.WORKER_BUSY.labels(self.model_name).set(1)
        with bound_job(job_id):
            try:
                outcome = self._run(job_id, payload)
            except Exception as exc:
                outcome = "failed"
                code = error_code(exc)
                log.exception("job failed", extra={"code": code})
                self.store.mark_failed(job_id, self.worker_id, code, str(exc) or type(exc).__name__)
                if code == "out_of_memory":
                    self._release_memory()
            finally:
                self.timers.stop()
                self.status.state, self.status.current_job = WorkerState.READY, None
                metrics.WORKER_BUSY.labels(self.model_name).set(0)
        metrics.JOBS.labels(self.model_name, outcome).inc()

    def _run(self, job_id: str, payload: dict[str, Any]) -> str:
        request = GenerateRequest.model_validate(payload)
        check_limits(request, max_pixels=self.settings.max_pixels)
        total = denoising_iterations(request.sampler, self.base_scheduler_config, request.steps)
        times = self.store.queue_times(job_id)
        if times is not None and time.time() > times[1] and self.store.mark_expired(job_id):
            log.info("job expired: it waited past its queue TTL")
            return "expired"
        if not self.store.start(job_id, self.worker_id, total):
            log.info("job skipped: no longer queued (canceled)")
            return "skipped"
        if times is not None:
            self._observe("queue_wait", time.time() - times[0])
        self._warn_truncated_prompts(job_id, request)

        timer = self.timers.start()
        reporter = StepReporter(
            self.store,
            job_id,
            events_per_second=self.settings.step_events_per_second,
            preview_every=request.preview_every,
            latent_family=self.latent_family,
        )

        def on_step(step: int, total: int, latents: torch.Tensor) -> bool:
            timer.step_done()
            return reporter(step, total, latents)

        metrics.BATCH_SIZE.labels(self.model_name).observe(request.num_images)
        images = generate_images(self.model.pipeline, self.base_scheduler_config, request, on_step)
        self.timers.stop()
        denoise_seconds = self._observe_device_time(timer)
        if reporter.canceled:
            del images
            self._release_memory()
            self.store.mark_canceled(job_id, reporter.last_step)
            log.info("job canceled", extra={"step": reporter.last_step})
            return "canceled"

        record_speed(self.store.redis, self.model_name, denoise_seconds, job_work(request))
        started = time.perf_counter()
        encoded = [encode_image(image, request.output_format) for image in images]
        self._observe("image_encode", time.perf_counter() - started)
        started = time.perf_counter()
        stored = self.store.mark_succeeded(job_id, encoded)
        self._observe("store", time.perf_counter() - started)
        if not stored:
            return "canceled"  # it was canceled between its last step and now
        metrics.IMAGES.labels(self.model_name).inc(len(encoded))
        log.info("job succeeded", extra={"images": len(encoded)})
        return "succeeded"

    def _warn_truncated_prompts(self, job_id: str, request: GenerateRequest) -> None:
        """Record a warning on the job when a prompt is longer than the text encoder's window (it gets truncated)."""
        tokenizer = getattr(self.model.pipeline, "tokenizer", None)
        if tokenizer is None:
            return
        window = tokenizer.model_max_length
        for field, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            count = len(tokenizer(text, truncation=False).input_ids) if text else 0
            if count > window:
                warning = f"{field} is {count} tokens; the text encoder reads the first {window}, the rest is ignored"
                self.store.add_warning(job_id, warning)
                log.warning(warning)

    def _observe_device_time(self, timer: PhaseTimer) -> float:
        """Record each step and phase of the pipeline call; returns the denoising time."""
        step_histogram = metrics.DENOISE_STEP_SECONDS.labels(self.model_name)
        for seconds in timer.step_seconds():
            step_histogram.observe(seconds)
        phases = timer.phase_seconds()
        for phase, seconds in phases.items():
            self._observe(phase, seconds)
        return phases.get("denoise", 0.0)

    def _observe(self, phase: str, seconds: float) -> None:
        metrics.JOB_PHASE_SECONDS.labels(self.model_name, phase).observe(seconds)
        log.info("phase done", extra={"phase": phase, "seconds": round(seconds, 6)})

    def _release_memory(self) -> None:
        if self.model.device.type == "cuda":
            torch.cuda.empty_cache()
