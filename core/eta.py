"""Queue position ETAs: pure arithmetic over the work ahead, recent measured speed and the live workers."""

from __future__ import annotations

from collections.abc import Sequence

from core.schemas import GenerateRequest

# Weight of the newest measurement in the moving average of a model's speed.
SPEED_SMOOTHING = 0.3


def job_work(request: GenerateRequest) -> float:
    """A job's denoising work in units of one step of one 512x512 image (cost grows with steps, images and pixels)."""
    return (
        request.steps * request.denoise_strength * request.num_images * (request.width * request.height) / (512 * 512)
    )


def updated_unit_seconds(previous: float | None, measured: float) -> float:
    """Exponential moving average of seconds per unit of work."""
    if previous is None:
        return measured
    return SPEED_SMOOTHING * measured + (1 - SPEED_SMOOTHING) * previous


def estimate_queue_eta(
    ahead: Sequence[float],
    running_remaining: Sequence[float],
    own_work: float,
    unit_seconds: float | None,
    workers: int,
) -> tuple[float, float] | None:
    """(seconds until the job starts, seconds until it finishes), or None when there is no speed or worker yet.

    The work ahead (queued jobs before this one, plus what running jobs still have to do) is shared among the live
    workers; the job itself then runs on one of them.
    """
    if unit_seconds is None or workers <= 0:
        return None
    start = (sum(ahead) + sum(running_remaining)) * unit_seconds / workers
    return start, start + own_work * unit_seconds
