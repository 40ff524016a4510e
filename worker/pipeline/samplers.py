"""Schedulers for samplers: each request `sampler` (core/samplers.py holds the table) runs as a diffusers scheduler
built from the model's own config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import diffusers
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from core.samplers import Sampler


def scheduler_class(sampler: Sampler) -> type[SchedulerMixin]:
    """The diffusers scheduler class `sampler` runs as (core's sampler table names it)."""
    cls: type[SchedulerMixin] = getattr(diffusers, sampler.scheduler_class)
    return cls


def build_scheduler(sampler: Sampler, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler for `sampler`, configured like the model's own scheduler (betas, offsets, prediction type)."""
    return scheduler_class(sampler).from_config(dict(base_config), **sampler.scheduler_options)


def supported_samplers(base_config: Mapping[str, Any]) -> list[Sampler]:
    """The samplers whose scheduler builds from this config."""
    supported = []
    for sampler in Sampler:
        try:
            build_scheduler(sampler, base_config)
        except (ImportError, AttributeError, ValueError, TypeError, NotImplementedError):
            continue
        supported.append(sampler)
    return supported


def denoising_iterations(scheduler: SchedulerMixin, steps: int, strength: float = 1.0) -> int:
    """How many UNet iterations (and step callbacks) `steps` steps of this scheduler take: 2*steps - 1 for Heun;
    img2img and inpainting at `strength` < 1 skip the first steps as diffusers does (`int(steps * strength)` run).
    It sets the scheduler's timesteps, so pass a scheduler that will not run."""
    scheduler.set_timesteps(steps)
    skipped = steps - min(int(steps * strength), steps) if strength < 1 else 0
    return len(scheduler.timesteps) - skipped * scheduler.order
