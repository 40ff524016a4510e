"""Every sampler name builds its scheduler from the Stable Diffusion 1.5 scheduler config."""

from __future__ import annotations

import pytest
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from core.samplers import samplers_for
from core.schemas import Sampler
from worker.pipeline.samplers import build_scheduler, scheduler_class, supported_samplers
from worker.pipeline.tiny import SD15_SCHEDULER_CONFIG

EXPECTED = {
    Sampler.DDIM: DDIMScheduler,
    Sampler.PNDM: PNDMScheduler,
    Sampler.LMS: LMSDiscreteScheduler,
    Sampler.HEUN: HeunDiscreteScheduler,
    Sampler.EULER: EulerDiscreteScheduler,
    Sampler.EULER_A: EulerAncestralDiscreteScheduler,
    Sampler.DPMPP_2M: DPMSolverMultistepScheduler,
    Sampler.DPMPP_2M_KARRAS: DPMSolverMultistepScheduler,
    Sampler.UNIPC: UniPCMultistepScheduler,
    Sampler.LCM: LCMScheduler,
    Sampler.FLOW_EULER: FlowMatchEulerDiscreteScheduler,
    Sampler.FLOW_HEUN: FlowMatchHeunDiscreteScheduler,
    Sampler.FLOW_DPMPP_2M: DPMSolverMultistepScheduler,
    Sampler.FLOW_UNIPC: UniPCMultistepScheduler,
}


def test_table_covers_every_sampler() -> None:
    # core's table names each scheduler as a string (core never imports diffusers): every name resolves in diffusers.
    assert {sampler: scheduler_class(sampler) for sampler in Sampler} == EXPECTED


@pytest.mark.parametrize("sampler", samplers_for("sd15"))
def test_sampler_builds_from_sd15_config(sampler: Sampler) -> None:
    scheduler = build_scheduler(sampler, SD15_SCHEDULER_CONFIG)
    assert type(scheduler) is EXPECTED[sampler]
    # The model's noise schedule carries over: same betas as SD 1.5 trained with.
    assert scheduler.config.beta_start == 0.00085
    assert scheduler.config.beta_end == 0.012
    assert scheduler.config.beta_schedule == "scaled_linear"
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10


def test_dpmpp_variants_differ_only_in_karras_sigmas() -> None:
    plain = build_scheduler(Sampler.DPMPP_2M, SD15_SCHEDULER_CONFIG)
    karras = build_scheduler(Sampler.DPMPP_2M_KARRAS, SD15_SCHEDULER_CONFIG)
    assert plain.config.algorithm_type == karras.config.algorithm_type == "dpmsolver++"
    assert plain.config.solver_order == karras.config.solver_order == 2
    assert not plain.config.use_karras_sigmas
    assert karras.config.use_karras_sigmas


def test_fresh_scheduler_each_time() -> None:
    # Schedulers hold per-run state (timesteps, step index): sharing one across jobs would leak it.
    assert build_scheduler(Sampler.EULER, SD15_SCHEDULER_CONFIG) is not build_scheduler(
        Sampler.EULER, SD15_SCHEDULER_CONFIG
    )


def test_all_samplers_supported_on_sd15() -> None:
    assert supported_samplers(SD15_SCHEDULER_CONFIG) == list(Sampler)
