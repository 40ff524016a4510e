"""The job lifecycle inside a worker: start, generate, encode, store; or cancel, or fail with a stable code."""

from __future__ import annotations

import logging
from typing import Any

import torch
from pydantic import ValidationError

from core.eta import job_work
from core.jobs import JobStore
from core.schemas import GenerateRequest, LimitExceededError, check_limits
from core.settings import Settings
from core.speed import record_speed
from worker.encoding import encode_image
from worker.generation import generate_images
from worker.loading import LoadedModel
from worker.previews import latent_family
from worker.progress import StepReporter
from worker.samplers import denoising_iterations

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

    def __init__(self, model: LoadedModel, store: JobStore, settings: Settings, worker_id: str) -> None:
        self.model = model
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.model_name = settings.served_model_name()
        self.base_scheduler_config: dict[str, Any] = dict(model.pipeline.scheduler.config)
        vae_config = model.pipeline.vae.config
        self.latent_family = latent_family(vae_config.scaling_factor, vae_config.latent_channels)
        self.busy = False

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
        self.busy = True
        try:
            request = GenerateRequest.model_validate(payload)
            check_limits(request, max_pixels=self.settings.max_pixels)
            total = denoising_iterations(request.sampler, self.base_scheduler_config, request.steps)
            if not self.store.start(job_id, self.worker_id, total):
                log.info("job %s skipped: no longer queued (canceled)", job_id)
                return
            self._generate(job_id, request)
        except Exception as exc:
            code = error_code(exc)
            log.exception("job %s failed (%s)", job_id, code)
            self.store.mark_failed(job_id, self.worker_id, code, str(exc) or type(exc).__name__)
            if code == "out_of_memory":
                self._release_memory()
        finally:
            self.busy = False

    def _generate(self, job_id: str, request: GenerateRequest) -> None:
        reporter = StepReporter(
            self.store,
            job_id,
            events_per_second=self.settings.step_events_per_second,
            preview_every=request.preview_every,
            latent_family=self.latent_family,
        )
        images = generate_images(self.model.pipeline, self.base_scheduler_config, request, reporter)
        if reporter.canceled:
            del images
            self._release_memory()
            self.store.mark_canceled(job_id, reporter.last_step)
            log.info("job %s canceled at step %d", job_id, reporter.last_step)
            return
        record_speed(self.store.redis, self.model_name, reporter.denoise_seconds, job_work(request))
        encoded = [encode_image(image, request.output_format) for image in images]
        if self.store.mark_succeeded(job_id, encoded):
            log.info("job %s succeeded: %d images in %.2fs", job_id, len(encoded), reporter.denoise_seconds)

    def _release_memory(self) -> None:
        if self.model.device.type == "cuda":
            torch.cuda.empty_cache()
