"""Per-job step reporting from inside the denoising loop: progress, step events, previews, cancel checks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from core.events import PreviewEvent, StepEvent
from core.jobs import JobStore, StepSignal
from worker.pipeline.resident import Latents

log = logging.getLogger(__name__)


class StepReporter:
    """The step hook of one job. Step events and progress writes are coalesced to `events_per_second` (the last
    step, and the step of a preview, always go out); previews (made by `preview` from the job's latents and the step)
    go out every `preview_every` steps; a requested cancel is seen at every step. Writes are fenced by the run's
    `attempt`: once the job moved on without this run, the hook says LOST. While Redis is away the run goes on
    unreported.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        *,
        attempt: int,
        events_per_second: float,
        preview_every: int,
        preview: Callable[[Latents, int], PreviewEvent],
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.attempt = attempt
        self.min_interval = 1.0 / events_per_second
        self.preview_every = preview_every
        self.preview = preview
        self.started = time.monotonic()
        self._last_step_at = self.started
        self._last_event_at = float("-inf")
        self.last_step = 0
        self.signal = StepSignal.GO
        self._redis_away = False

    def __call__(self, step: int, total: int, latents: Latents) -> StepSignal:
        try:
            self.signal = self._report(step, total, latents)
            if self._redis_away:
                log.info("Redis is back: progress reported again")
            self._redis_away = False
        except RedisError as exc:
            if not self._redis_away:
                log.warning("Redis unavailable: the run goes on without progress reports (%s)", exc)
            self._redis_away = True
        return self.signal

    def _report(self, step: int, total: int, latents: Latents) -> StepSignal:
        now = time.monotonic()
        step_seconds = now - self._last_step_at
        self._last_step_at = now
        self.last_step = step
        elapsed = now - self.started
        previewed = bool(self.preview_every) and step % self.preview_every == 0
        if previewed:
            self.store.publish(self.job_id, self.preview(latents, step), self.attempt)
        # A preview's step goes out with it, so no reader sees a preview ahead of the job's progress.
        if previewed or step >= total or now - self._last_event_at >= self.min_interval:
            self._last_event_at = now
            eta = elapsed / step * (total - step)
            event = StepEvent(
                step=step, total=total, step_seconds=step_seconds, elapsed_seconds=elapsed, eta_seconds=eta
            )
            return self.store.report_step(self.job_id, step, total, eta, event, self.attempt)
        return StepSignal.CANCEL if self.store.cancel_requested(self.job_id) else StepSignal.GO

    @property
    def denoise_seconds(self) -> float:
        """Time from the start of the run to the last step seen."""
        return self._last_step_at - self.started
