"""Queue ETA arithmetic."""

from __future__ import annotations

import pytest

from core.eta import estimate_queue_eta, job_work, updated_unit_seconds
from core.schemas import GenerateRequest


def test_job_work_scales_with_steps_images_and_pixels() -> None:
    base = job_work(GenerateRequest(prompt="x", width=512, height=512, steps=10))
    assert base == 10
    assert job_work(GenerateRequest(prompt="x", width=512, height=512, steps=20)) == 2 * base
    assert job_work(GenerateRequest(prompt="x", width=512, height=512, steps=10, num_images=3)) == 3 * base
    assert job_work(GenerateRequest(prompt="x", width=1024, height=1024, steps=10)) == 4 * base


def test_moving_average() -> None:
    assert updated_unit_seconds(None, 2.0) == 2.0
    assert updated_unit_seconds(1.0, 2.0) == pytest.approx(1.3)


def test_eta_shares_the_work_ahead_among_workers() -> None:
    # Two queued jobs of 10 units ahead, a running job with 4 units left, 0.5 s a unit, own job 6 units.
    assert estimate_queue_eta([10, 10], [4], 6, 0.5, workers=1) == (12.0, 15.0)
    assert estimate_queue_eta([10, 10], [4], 6, 0.5, workers=2) == (6.0, 9.0)
    assert estimate_queue_eta([], [], 6, 0.5, workers=1) == (0.0, 3.0)


def test_eta_unknown_without_speed_or_workers() -> None:
    assert estimate_queue_eta([10], [], 6, None, workers=1) is None
    assert estimate_queue_eta([10], [], 6, 0.5, workers=0) is None
