"""The model family table: what each architecture family brings to a request. The one source of the request
defaults (a model's own entry in the models file may override them; `GenerateRequest` takes the sd15 ones) and of each
family's rules (sizes, modes, guidance, negative prompts, prompt length), which the API enforces, `GET /models` shows
as `capabilities`, and the playground, the CLI and the worker read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from core.samplers import Sampler, samplers_for


class ModelFamily(StrEnum):
    """Architecture families; each brings its native size and usual sampler settings."""

    SD15 = "sd15"
    SD2 = "sd2"
    SDXL = "sdxl"
    TURBO = "turbo"  # SDXL-Turbo / SD-Turbo: one to four steps, no classifier-free guidance
    FLUX = "flux"  # FLUX.1 dev/schnell: rectified flow, guidance-distilled, CLIP + T5
    SD3 = "sd3"  # Stable Diffusion 3 / 3.5: rectified flow MMDiT, CLIP x2 + T5
    QWEN_IMAGE = "qwen-image"  # Qwen-Image: rectified flow MMDiT, Qwen2.5-VL text encoder


# Modes, by `core.schemas.GenerationMode` value (schemas.py imports this module).
Mode = Literal["txt2img", "img2img", "inpaint"]
ALL_MODES: tuple[Mode, ...] = ("txt2img", "img2img", "inpaint")
# What `guidance_scale` is to the family: classifier-free guidance's scale; a distilled guidance strength the model
# takes as an input (one pass per step); nothing (the model runs without guidance).
Guidance = Literal["cfg", "distilled", "none"]
# Whether a negative prompt is taken: yes (classifier-free guidance uses it); only with `true_cfg_scale` > 1 (a
# second, unconditional pass per step: FLUX, Qwen-Image); no (the family has no guidance to put it in).
NegativePromptSupport = Literal["yes", "true_cfg", "no"]


@dataclass(frozen=True)
class RequestDefaults:
    """What a request that names a model of the family but leaves these fields out gets."""

    width: int
    height: int
    steps: int
    sampler: Sampler
    guidance_scale: float
    # FLUX and Qwen-Image: the true classifier-free guidance scale (None: off); other families take none.
    true_cfg_scale: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The defaults by request field name, in declaration order."""
        return asdict(self)


@dataclass(frozen=True)
class Family:
    """One row of the family table: the defaults a request gets and the rules it must keep."""

    family: ModelFamily
    defaults: RequestDefaults
    # The generation modes its pipelines have.
    modes: tuple[Mode, ...]
    # Width and height must be multiples of this: the VAE's downscale factor times the transformer's patch size (or
    # FLUX/Qwen-Image's 2x2 latent packing); 8 for the UNet families.
    size_multiple: int
    guidance: Guidance
    negative_prompt: NegativePromptSupport
    # The prompt length its text encoder reads (CLIP: 77 tokens; T5's `max_sequence_length`); longer prompts are not
    # refused: the worker truncates them (or reads them in chunks, for one-CLIP families) and warns.
    max_prompt_tokens: int
    # The longest side it takes, in pixels (the deployment's IMAGEGEN_MAX_PIXELS still bounds width*height).
    max_size: int = 2048

    @property
    def samplers(self) -> list[Sampler]:
        """The samplers that fit the family in some mode (core/samplers.py's table says which)."""
        return samplers_for(self.family)

    def samplers_by_mode(self, modes: tuple[Mode, ...] | list[Mode] | None = None) -> dict[str, list[str]]:
        """Per mode (the family's, or `modes`), the samplers that run it on the family's models."""
        return {mode: [s.value for s in samplers_for(self.family, mode)] for mode in modes or self.modes}

    @property
    def true_cfg(self) -> bool:
        """Whether the family takes `true_cfg_scale`."""
        return self.negative_prompt == "true_cfg"

    def capabilities(self) -> dict[str, Any]:
        """What `GET /models` shows of the family's rules, by name, in a JSON-ready form."""
        return {
            "modes": list(self.modes),
            "samplers": [sampler.value for sampler in self.samplers],
            "samplers_by_mode": self.samplers_by_mode(),
            "negative_prompt": self.negative_prompt,
            "guidance": self.guidance,
            "true_cfg": self.true_cfg,
            "size_multiple": self.size_multiple,
            "max_prompt_tokens": self.max_prompt_tokens,
            "default_size": [self.defaults.width, self.defaults.height],
            "max_size": self.max_size,
        }


# Sources of the values: the diffusers 0.42 pipelines' own defaults and checks (StableDiffusion3Pipeline,
# FluxPipeline, QwenImagePipeline `__call__` and `check_inputs`); docs/api.md#model-families says which was chosen where
# they differ. The SD line: 77-token CLIP, sides multiples of 8 (the VAE's factor).
_ROWS = (
    Family(ModelFamily.SD15, RequestDefaults(512, 512, 25, Sampler.EULER_A, 7.5), ALL_MODES, 8, "cfg", "yes", 77),
    Family(ModelFamily.SD2, RequestDefaults(768, 768, 25, Sampler.EULER_A, 7.5), ALL_MODES, 8, "cfg", "yes", 77),
    Family(ModelFamily.SDXL, RequestDefaults(1024, 1024, 30, Sampler.EULER_A, 7.0), ALL_MODES, 8, "cfg", "yes", 77),
    Family(ModelFamily.TURBO, RequestDefaults(512, 512, 1, Sampler.EULER_A, 0.0), ALL_MODES, 8, "none", "no", 77),
    # FluxPipeline: 1024² (default_sample_size 128 x VAE factor 8), 28 steps, guidance 3.5 (FLUX.1-dev; schnell
    # wants 0 and 4 steps: its models-file entry says so), sides divisible by 16 (VAE 8 x 2x2 packing), T5
    # max_sequence_length 512. Negative prompts only through true CFG (true_cfg_scale > 1).
    Family(
        ModelFamily.FLUX,
        RequestDefaults(1024, 1024, 28, Sampler.FLOW_EULER, 3.5),
        ALL_MODES,
        16,
        "distilled",
        "true_cfg",
        512,
    ),
    # StableDiffusion3Pipeline: 1024² (sample size 128 x 8), 28 steps, guidance 7.0 (SD3-medium's; SD3.5 large's
    # card uses 3.5-4.5: set it in its models-file entry), sides divisible by 16 (VAE 8 x patch 2). T5 takes up to
    # 512 tokens (the pipeline's ceiling; its default max_sequence_length is 256).
    Family(ModelFamily.SD3, RequestDefaults(1024, 1024, 28, Sampler.FLOW_EULER, 7.0), ALL_MODES, 16, "cfg", "yes", 512),
    # QwenImagePipeline: 1024² (sample size 128 x 8), 50 steps, true_cfg_scale 4.0, sides divisible by 16 (VAE 8 x
    # 2x2 packing), prompts up to 1024 tokens (the pipeline's ceiling). The model card's 1:1 size is 1328²: over
    # the default IMAGEGEN_MAX_PIXELS (1024²), so a models-file entry sets it with a larger limit. guidance_scale
    # is read only by guidance-distilled checkpoints (1.0: none); true_cfg_scale is its CFG scale.
    Family(
        ModelFamily.QWEN_IMAGE,
        RequestDefaults(1024, 1024, 50, Sampler.FLOW_EULER, 1.0, true_cfg_scale=4.0),
        ALL_MODES,
        16,
        "cfg",
        "true_cfg",
        1024,
    ),
)
FAMILIES: Mapping[ModelFamily, Family] = MappingProxyType({row.family: row for row in _ROWS})
# The request fields a family (or a models-file entry) gives defaults for.
DEFAULT_FIELDS = tuple(field.name for field in fields(RequestDefaults))
# The family of a model nothing else is known about (an id or path without a models-file entry); its defaults are
# `GenerateRequest`'s own, what a request holds before its model's are applied.
DEFAULT_FAMILY = ModelFamily.SD15
BASE_DEFAULTS = FAMILIES[DEFAULT_FAMILY].defaults


def family_row(family: str | None) -> Family:
    """The row of `family` (a `ModelFamily` value); the default family's for None or an unknown name."""
    try:
        return FAMILIES[ModelFamily(family)] if family is not None else FAMILIES[DEFAULT_FAMILY]
    except ValueError:
        return FAMILIES[DEFAULT_FAMILY]


def family_table_markdown() -> str:
    """The family table as docs/api.md shows it (tests/unit/test_families_rules.py checks they agree; print it with
    `python -m core.families`)."""
    lines = [
        "| family | modes | sides: multiple of, max | default size | steps | sampler | guidance | guidance_scale "
        "| true_cfg_scale | negative prompt | prompt tokens | samplers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    times = "\u00d7"  # the multiplication sign, as in the docs' sizes
    for family, row in FAMILIES.items():
        d = row.defaults
        true_cfg = "—" if not row.true_cfg else "off" if d.true_cfg_scale is None else f"{d.true_cfg_scale:g}"
        marked = [f"`{sampler.value}`" + ("*" if len(sampler.modes) == 1 else "") for sampler in row.samplers]
        samplers = ", ".join(marked)  # *: text-to-image only
        lines.append(
            f"| `{family.value}` | {', '.join(row.modes)} | {row.size_multiple}, {row.max_size} "
            f"| {d.width}{times}{d.height} | {d.steps} | `{d.sampler.value}` | {row.guidance} "
            f"| {d.guidance_scale:g} | {true_cfg} "
            f"| {row.negative_prompt} | {row.max_prompt_tokens} | {samplers} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(family_table_markdown(), end="")
