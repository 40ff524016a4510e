"""The sampler table: each sampler a request may name, with the diffusers scheduler it runs as and the name
AUTOMATIC1111 gives it. The one place samplers are listed; torch-free, so the API and clients read it too."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Sampler(StrEnum):
    """Sampler names a request may give; each runs as one diffusers scheduler."""

    _value_: str
    scheduler_class: str
    scheduler_options: Mapping[str, Any]
    a1111_name: str

    def __new__(
        cls, value: str, scheduler_class: str, a1111_name: str, scheduler_options: Mapping[str, Any] | None = None
    ) -> Sampler:
        member = str.__new__(cls, value)
        member._value_ = value
        member.scheduler_class = scheduler_class
        member.a1111_name = a1111_name
        member.scheduler_options = MappingProxyType(dict(scheduler_options or {}))
        return member

    # Each member carries its row: the diffusers scheduler class name (a string: core never imports diffusers), the
    # AUTOMATIC1111 display name, and the options laid over the model's own scheduler config.
    # NAME = value, scheduler class, AUTOMATIC1111 name[, options]
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
