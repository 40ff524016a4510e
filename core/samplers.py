"""The sampler table: each sampler a request may name, with the diffusers scheduler it runs as, the name
AUTOMATIC1111 gives it and the model families it fits. The one place samplers are listed; torch-free, so the API and
clients read it too."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

# The families each kind of sampler fits, by `core.families.ModelFamily` value (spelled here: families.py imports this
# module; tests/unit/test_families_rules.py checks the two agree).
SD_LINE = frozenset({"sd15", "sd2", "sdxl", "turbo"})
FLOW = frozenset({"flux", "sd3", "qwen-image"})
# Modes, by `core.schemas.GenerationMode` value.
ALL_MODES = ("txt2img", "img2img", "inpaint")
TXT2IMG = ("txt2img",)


class Sampler(StrEnum):
    """Sampler names a request may give; each runs as one diffusers scheduler."""

    _value_: str
    scheduler_class: str
    scheduler_options: Mapping[str, Any]
    a1111_name: str
    families: frozenset[str]
    modes: tuple[str, ...]

    def __new__(
        cls,
        value: str,
        scheduler_class: str,
        a1111_name: str,
        scheduler_options: Mapping[str, Any] | None = None,
        families: frozenset[str] = SD_LINE,
        modes: tuple[str, ...] = ALL_MODES,
    ) -> Sampler:
        member = str.__new__(cls, value)
        member._value_ = value
        member.scheduler_class = scheduler_class
        member.a1111_name = a1111_name
        member.scheduler_options = MappingProxyType(dict(scheduler_options or {}))
        member.families = families
        member.modes = modes
        return member

    def fits(self, family: str, mode: str | None = None) -> bool:
        """Whether this sampler runs on models of `family` (a `ModelFamily` value), in `mode` when given."""
        return family in self.families and (mode is None or mode in self.modes)

    # Each member carries its row: the diffusers scheduler class name (a string: core never imports diffusers), the
    # AUTOMATIC1111 display name, the options laid over the model's own scheduler config, the families it fits
    # (SD_LINE: noise-prediction models on a DDPM schedule; FLOW: rectified-flow models, which predict a velocity) and
    # the modes it runs in on them.
    # NAME = value, scheduler class, AUTOMATIC1111 name[, options[, families[, modes]]]
    DDIM = "ddim", "DDIMScheduler", "DDIM"
    PNDM = "pndm", "PNDMScheduler", "PLMS", {"skip_prk_steps": True}
    LMS = "lms", "LMSDiscreteScheduler", "LMS"
    HEUN = "heun", "HeunDiscreteScheduler", "Heun"
    EULER = "euler", "EulerDiscreteScheduler", "Euler"
    EULER_A = "euler_a", "EulerAncestralDiscreteScheduler", "Euler a"
    DPMPP_2M = (
        "dpmpp_2m",
        "DPMSolverMultistepScheduler",
        "DPM++ 2M",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    )
    DPMPP_2M_KARRAS = (
        "dpmpp_2m_karras",
        "DPMSolverMultistepScheduler",
        "DPM++ 2M Karras",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    )
    UNIPC = "unipc", "UniPCMultistepScheduler", "UniPC"
    LCM = "lcm", "LCMScheduler", "LCM"
    # Flow matching. FlowMatchEuler takes the model's own shift settings (FLUX's resolution-dependent shift comes in
    # with `use_dynamic_shifting` from the model's scheduler config); the multistep solvers run on flow sigmas. Where
    # each runs is what diffusers 0.42's pipelines allow: FluxPipeline and QwenImagePipeline pass their own `sigmas`
    # (and `mu`) to `set_timesteps`, which FlowMatchHeun takes neither of, and DPMSolverMultistep takes no `sigmas`
    # (FluxPipeline's text-to-image leaves them out for a scheduler on flow sigmas; Qwen-Image's never does); the flow
    # families' img2img and inpainting noise the input with `scheduler.scale_noise`, which only the FlowMatch
    # schedulers have (worker/pipeline/samplers.py `sampler_runs` checks the same against the loaded model).
    FLOW_EULER = "flow_euler", "FlowMatchEulerDiscreteScheduler", "Euler", None, FLOW
    FLOW_HEUN = "flow_heun", "FlowMatchHeunDiscreteScheduler", "Heun", None, frozenset({"sd3"})
    FLOW_DPMPP_2M = (
        "flow_dpmpp_2m",
        "DPMSolverMultistepScheduler",
        "DPM++ 2M",
        {
            "use_flow_sigmas": True,
            "prediction_type": "flow_prediction",
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
        },
        frozenset({"flux", "sd3"}),
        TXT2IMG,
    )
    FLOW_UNIPC = (
        "flow_unipc",
        "UniPCMultistepScheduler",
        "UniPC",
        {"use_flow_sigmas": True, "prediction_type": "flow_prediction"},
        FLOW,
        TXT2IMG,
    )


def samplers_for(family: str, mode: str | None = None) -> list[Sampler]:
    """The samplers that fit `family` (a `ModelFamily` value), in `mode` when given, in table order."""
    return [sampler for sampler in Sampler if sampler.fits(family, mode)]


# AUTOMATIC1111 1.9+ names a sampler and its noise schedule apart (`sampler_name: "DPM++ 2M"`, `scheduler: "karras"`);
# older clients put the schedule in the name (`"DPM++ 2M Karras"`). `automatic` (or none) keeps the sampler's own.
A1111_AUTOMATIC_SCHEDULERS = frozenset({"", "automatic"})
A1111_KARRAS = "karras"


def a1111_scheduler(sampler: Sampler) -> str:
    """The AUTOMATIC1111 `scheduler` a sampler of this table runs with: `karras` for the Karras-sigma rows, else
    `automatic`."""
    return A1111_KARRAS if sampler.scheduler_options.get("use_karras_sigmas") else "automatic"


def from_a1111(name: str, scheduler: str | None, family: str, mode: str | None = None) -> Sampler | None:
    """The sampler AUTOMATIC1111 calls `name` (its display name, case-insensitive, or this table's own value) run
    with `scheduler` (None or `automatic`: as named; `karras`: its Karras variant) that fits `family` (in `mode`, when
    given); None when no row does (an A1111 name stands for the row of the model's family: `Euler` is `euler` on an
    sd15 model, `flow_euler` on a FLUX one)."""
    wanted = name.strip().lower()
    schedule = (scheduler or "").strip().lower()
    if schedule == A1111_KARRAS and not wanted.endswith(" karras"):
        wanted += " karras"
    elif schedule not in A1111_AUTOMATIC_SCHEDULERS and schedule != A1111_KARRAS:
        return None
    for sampler in samplers_for(family, mode):
        if wanted in (sampler.a1111_name.lower(), sampler.value):
            return sampler
    return None
