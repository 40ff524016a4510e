"""The model family table: what each architecture family brings to a request. The one source of the request
defaults (a model's own entry in the models file may override them; `GenerateRequest` takes the sd15 ones)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from core.samplers import Sampler


class ModelFamily(StrEnum):
    """Architecture families; each brings its native size and usual sampler settings."""

    SD15 = "sd15"
    SD2 = "sd2"
    SDXL = "sdxl"
    TURBO = "turbo"  # SDXL-Turbo / SD-Turbo: one to four steps, no classifier-free guidance


@dataclass(frozen=True)
class RequestDefaults:
    """What a request that names a model of the family but leaves these fields out gets."""

    width: int
    height: int
    steps: int
    sampler: Sampler
    guidance_scale: float

    def as_dict(self) -> dict[str, Any]:
        """The defaults by request field name, in declaration order."""
        return asdict(self)


@dataclass(frozen=True)
class Family:
    """One row of the family table."""

    defaults: RequestDefaults


FAMILIES: Mapping[ModelFamily, Family] = MappingProxyType(
    {
        ModelFamily.SD15: Family(RequestDefaults(512, 512, 25, Sampler.EULER_A, 7.5)),
        ModelFamily.SD2: Family(RequestDefaults(768, 768, 25, Sampler.EULER_A, 7.5)),
        ModelFamily.SDXL: Family(RequestDefaults(1024, 1024, 30, Sampler.EULER_A, 7.0)),
        ModelFamily.TURBO: Family(RequestDefaults(512, 512, 1, Sampler.EULER_A, 0.0)),
    }
)
# The request fields a family (or a models-file entry) gives defaults for.
DEFAULT_FIELDS = tuple(field.name for field in fields(RequestDefaults))
# The family of a model nothing else is known about (an id or path without a models-file entry); its defaults are
# `GenerateRequest`'s own, what a request holds before its model's are applied.
DEFAULT_FAMILY = ModelFamily.SD15
BASE_DEFAULTS = FAMILIES[DEFAULT_FAMILY].defaults
