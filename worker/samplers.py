"""The sampler table: each request `sampler` maps onto a diffusers scheduler built from the model's own config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from core.schemas import Sampler

# sampler → (scheduler class, options over the model's scheduler config). The one place this mapping lives.
SAMPLERS: dict[Sampler, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    Sampler.DDIM: (DDIMScheduler, {}),
    Sampler.PNDM: (PNDMScheduler, {"skip_prk_steps": True}),
    Sampler.LMS: (LMSDiscreteScheduler, {}),
    Sampler.HEUN: (HeunDiscreteScheduler, {}),
    Sampler.EULER: (EulerDiscreteScheduler, {}),
    Sampler.EULER_A: (EulerAncestralDiscreteScheduler, {}),
    Sampler.DPMPP_2M: (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Sampler.DPMPP_2M_KARRAS: (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    Sampler.UNIPC: (UniPCMultistepScheduler, {}),
    Sampler.LCM: (LCMScheduler, {}),
}


def build_scheduler(sampler: Sampler, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler for `sampler`, configured like the model's own scheduler (betas, offsets, prediction type)."""
    scheduler_class, options = SAMPLERS[sampler]
    return scheduler_class.from_config(dict(base_config), **options)


def supported_samplers(base_config: Mapping[str, Any]) -> list[Sampler]:
    """The samplers whose scheduler builds from this config."""
    supported = []
    for sampler in SAMPLERS:
        try:
            build_scheduler(sampler, base_config)
        except (ImportError, ValueError, TypeError, NotImplementedError):
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
