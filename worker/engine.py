"""The job lifecycle inside a worker: mark running, generate, encode, store, or fail with a stable code."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from pydantic import ValidationError

from core.jobs import JobStore
from core.schemas import GenerateRequest, LimitExceededError, check_limits
from core.settings import Settings
from worker.encoding import encode_image
from worker.generation import generate_images
from worker.loading import LoadedModel

log = logging.getLogger(__name__)


def error_code(exc: BaseException) -> str:
    """The stable code a job failure reports for an exception."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return "out_of_memory"
    if isinstance(exc, ValidationError | LimitExceededError | ValueError):
        return "invalid_request"
    return "internal"


class ProgressWriter:
    """Writes step progress to the job record at most once per interval, and always the last step."""

    def __init__(self, store: JobStore, job_id: str, interval: float) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self._last = float("-inf")

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if step >= total or now - self._last >= self.interval:
            self._last = now
            self.store.set_progress(self.job_id, step, total)


class GenerationEngine:
    """Owns the resident pipeline and runs jobs on it, one at a time, in the worker's main thread."""

    def __init__(self, model: LoadedModel, store: JobStore, settings: Settings, worker_id: str) -> None:
        self.model = model
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.base_scheduler_config: dict[str, Any] = dict(model.pipeline.scheduler.config)
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
            self.store.mark_running(job_id, self.worker_id, request.steps)
            started = time.perf_counter()
            progress = ProgressWriter(self.store, job_id, self.settings.progress_interval_seconds)
            images = generate_images(self.model.pipeline, self.base_scheduler_config, request, progress)
            encoded = [encode_image(image, request.output_format) for image in images]
            self.store.mark_succeeded(job_id, encoded)
            log.info("job %s succeeded: %d images in %.2fs", job_id, len(encoded), time.perf_counter() - started)
        except Exception as exc:
            code = error_code(exc)
            log.exception("job %s failed (%s)", job_id, code)
            self.store.mark_failed(job_id, self.worker_id, code, str(exc) or type(exc).__name__)
            if code == "out_of_memory" and self.model.device.type == "cuda":
                torch.cuda.empty_cache()
        finally:
            self.busy = False
