"""Schedulers for samplers: each request `sampler` (core/samplers.py holds the table) runs as a diffusers scheduler
built from the model's own config."""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping
from typing import Any

import diffusers
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from core.families import ModelFamily
from core.samplers import Sampler
from core.schemas import GenerationMode

# Families whose pipelines pass their own `sigmas` list and `mu` to the scheduler (FluxPipeline, FluxImg2ImgPipeline,
# FluxInpaintPipeline, QwenImage*Pipeline in diffusers 0.42): a scheduler whose `set_timesteps` takes no `sigmas`
# (FlowMatchHeun; DPMSolverMultistep, but for FLUX's text-to-image) fails there, so it is not offered.
FLOW_SIGMA_FAMILIES = frozenset({ModelFamily.FLUX, ModelFamily.QWEN_IMAGE})
FLOW_FAMILIES = frozenset({ModelFamily.FLUX, ModelFamily.SD3, ModelFamily.QWEN_IMAGE})
# Schedulers built once per (sampler, model config) in this process; each use takes a copy. Building one from a config
# inspects its class's signature (~0.75 ms on a 2-core CPU); a copy costs ~0.15 ms. A job built two (to check its
# sampler and count its steps at admission) and a third to run: 1-2 ms of the worker's time between dequeuing a job
# and starting it (docs/performance.md). A worker serves one model, so this holds a few dozen at most.
_PROTOTYPES: dict[tuple[Sampler, str], SchedulerMixin] = {}


def scheduler_class(sampler: Sampler) -> type[SchedulerMixin]:
    """The diffusers scheduler class `sampler` runs as (core's sampler table names it)."""
    cls: type[SchedulerMixin] = getattr(diffusers, sampler.scheduler_class)
    return cls


def scheduler_options(sampler: Sampler, base_config: Mapping[str, Any]) -> dict[str, Any]:
    """The options laid over the model's config: the sampler's own, and for the multistep solvers on flow sigmas the
    model's flow `shift` under the name they take (`flow_shift`; FlowMatch schedulers call it `shift`). A model with
    `use_dynamic_shifting` (FLUX, Qwen-Image) passes it through too, and its pipeline then gives the
    resolution-dependent `mu` at each call."""
    options = dict(sampler.scheduler_options)
    if options.get("use_flow_sigmas") and "flow_shift" not in options:
        options["flow_shift"] = float(base_config.get("shift", 1.0))
    return options


def build_scheduler(sampler: Sampler, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler for `sampler`, configured like the model's own scheduler (betas, offsets, prediction type;
    for flow models the shift and dynamic-shifting settings): a copy of the one built for them first (`_PROTOTYPES`),
    never used itself, so every caller may set its timesteps and step it. A config that does not build raises each
    time."""
    key = (sampler, json.dumps(dict(base_config), sort_keys=True, default=str))
    prototype = _PROTOTYPES.get(key)
    if prototype is None:
        prototype = scheduler_class(sampler).from_config(dict(base_config), **scheduler_options(sampler, base_config))
        _PROTOTYPES[key] = prototype
    return copy.deepcopy(prototype)


def _passes_sigmas(family: str | None, mode: GenerationMode, scheduler: SchedulerMixin) -> bool:
    """Whether the family's pipeline for `mode` passes its own `sigmas` list to `set_timesteps` (FluxPipeline leaves
    it out for a scheduler on flow sigmas; its img2img and inpainting variants and Qwen-Image's pipelines never do)."""
    if family == ModelFamily.FLUX and mode is GenerationMode.TXT2IMG:
        return not scheduler.config.get("use_flow_sigmas", False)
    return family in FLOW_SIGMA_FAMILIES


def sampler_runs(
    sampler: Sampler, base_config: Mapping[str, Any], family: str | None, mode: GenerationMode = GenerationMode.TXT2IMG
) -> bool:
    """Whether `sampler` runs `mode` on a model of `family` with this scheduler config: it fits the family (core's
    sampler table), its scheduler builds, and it takes what the family's diffusers pipeline passes (custom `sigmas`
    and `mu` for FLUX and Qwen-Image; `scale_noise` for the flow families' img2img and inpainting, which the multistep
    solvers lack). Measured against diffusers 0.42 on the tiny models (tests/unit/test_flow_families.py)."""
    if family is not None and not sampler.fits(family):
        return False
    try:
        scheduler = build_scheduler(sampler, base_config)
    except (ImportError, AttributeError, ValueError, TypeError, NotImplementedError):
        return False
    parameters = inspect.signature(scheduler.set_timesteps).parameters
    if _passes_sigmas(family, mode, scheduler) and "sigmas" not in parameters:
        return False
    if (family in FLOW_SIGMA_FAMILIES or base_config.get("use_dynamic_shifting")) and "mu" not in parameters:
        return False
    return not (
        mode is not GenerationMode.TXT2IMG and family in FLOW_FAMILIES and not hasattr(scheduler, "scale_noise")
    )


def supported_samplers(base_config: Mapping[str, Any], family: str | None = None) -> list[Sampler]:
    """The samplers whose scheduler builds from this config; with `family`, those that run text-to-image on its
    models (`sampler_runs`; img2img and inpainting may take fewer)."""
    return [sampler for sampler in Sampler if sampler_runs(sampler, base_config, family)]


def is_flow_scheduler(scheduler: SchedulerMixin) -> bool:
    """Whether the scheduler runs on flow sigmas (a FlowMatch scheduler, or a multistep solver on flow sigmas)."""
    return type(scheduler).__name__.startswith("FlowMatch") or bool(scheduler.config.get("use_flow_sigmas", False))


def denoising_iterations(scheduler: SchedulerMixin, steps: int, strength: float = 1.0) -> int:
    """How many denoiser iterations (and step callbacks) `steps` steps of this scheduler take: 2*steps - 1 for Heun;
    img2img and inpainting at `strength` < 1 skip the first steps as diffusers does (the SD line's pipelines run
    `int(steps * strength)`; the flow families' skip `int(steps - steps * strength)`). It sets the scheduler's
    timesteps, so pass a scheduler that will not run."""
    if scheduler.config.get("use_dynamic_shifting", False):
        scheduler.set_timesteps(steps, mu=1.0)  # the resolution's shift moves the timesteps, not their count
    else:
        scheduler.set_timesteps(steps)
    if strength >= 1:
        skipped = 0
    elif is_flow_scheduler(scheduler):
        skipped = int(max(steps - min(steps * strength, steps), 0))
    else:
        skipped = steps - min(int(steps * strength), steps)
    return len(scheduler.timesteps) - skipped * scheduler.order
