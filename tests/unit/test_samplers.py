"""Every sampler name builds its scheduler from the Stable Diffusion 1.5 scheduler config."""

from __future__ import annotations

import pytest
import torch
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
from worker.pipeline.samplers import build_scheduler, scheduler_class, scheduler_options, supported_samplers
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


@pytest.mark.parametrize("sampler", [Sampler.EULER, Sampler.DPMPP_2M, Sampler.HEUN])
def test_fresh_scheduler_each_time(sampler: Sampler) -> None:
    """Schedulers hold per-run state (timesteps, step index): each use gets its own, as from the config, whatever an
    earlier one went through (they are copies of one built per sampler and config)."""
    used = build_scheduler(sampler, SD15_SCHEDULER_CONFIG)
    used.set_timesteps(7)
    sample = torch.zeros(1, 4, 8, 8)
    used.step(torch.zeros_like(sample), used.timesteps[0], sample)
    fresh = build_scheduler(sampler, SD15_SCHEDULER_CONFIG)
    built = scheduler_class(sampler).from_config(dict(SD15_SCHEDULER_CONFIG), **scheduler_options(sampler, {}))
    assert fresh is not used and fresh.config == built.config
    assert fresh.step_index is None and fresh.num_inference_steps == built.num_inference_steps
    fresh.set_timesteps(25)
    built.set_timesteps(25)
    assert torch.equal(fresh.timesteps, built.timesteps) and len(used.timesteps) < 25


def test_all_samplers_supported_on_sd15() -> None:
    assert supported_samplers(SD15_SCHEDULER_CONFIG) == list(Sampler)
