"""The models file: which models a deployment serves, by name, with where each comes from, its family and its request
defaults. Workers serve the entry they are started with (`IMAGEGEN_MODEL=<name>`); the API routes each request to its
model's queue and fills the fields a request leaves out from that model's defaults.

    # models.toml (IMAGEGEN_MODELS_FILE)
    [models.sd15]
    source = "stable-diffusion-v1-5/stable-diffusion-v1-5"   # hub id, local folder, .safetensors/.ckpt file
    family = "sd15"                              # sd15, sd2, sdxl, turbo, flux, sd3 or qwen-image
    sampler = "dpmpp_2m"                         # defaults for what a request leaves out
    steps = 25

    [models.sdxl-turbo]
    source = "/models/sd_xl_turbo_1.0_fp16.safetensors"
    family = "turbo"

    [models.flux-schnell]
    source = "black-forest-labs/FLUX.1-schnell"
    family = "flux"
    steps = 4
    guidance_scale = 0.0
    modes = ["txt2img", "img2img"]               # a subset of the family's: the others are refused (422)

The family's rules (core/families.py: sizes, samplers, guidance, negative prompts) hold for every model of it.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.families import DEFAULT_FAMILY, DEFAULT_FIELDS, FAMILIES, Family, Mode, ModelFamily
from core.fields import GuidanceScale, ImageSide, Steps, TrueCfgScale
from core.samplers import Sampler
from core.settings import Settings


class ModelEntry(BaseModel):
    """One model of the models file."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="Hub id, local diffusers folder, single-file checkpoint, tiny, demo.")
    family: ModelFamily = DEFAULT_FAMILY
    width: ImageSide | None = None
    height: ImageSide | None = None
    steps: Steps | None = None
    sampler: Sampler | None = None
    guidance_scale: GuidanceScale | None = None
    true_cfg_scale: TrueCfgScale | None = None  # FLUX, Qwen-Image only
    # The modes this model serves, a subset of its family's (None: all of the family's).
    modes: list[Mode] | None = Field(default=None, min_length=1)
    safety_checker: bool = False  # run the family's safety checker; flagged images are marked `content_filtered`

    @model_validator(mode="after")
    def _check_rules(self) -> ModelEntry:
        # The entry's own defaults and modes must keep its family's rules (a request that leaves them out gets them).
        row = self.rules
        for side in ("width", "height"):
            value = getattr(self, side)
            if value is not None and value % row.size_multiple:
                raise ValueError(f"{side} {value}: family {self.family} takes multiples of {row.size_multiple}")
        if self.sampler is not None and not self.sampler.fits(self.family, "txt2img"):
            raise ValueError(f"sampler {self.sampler}: not one of family {self.family}'s text-to-image samplers")
        if self.true_cfg_scale is not None and not row.true_cfg:
            raise ValueError(f"true_cfg_scale: family {self.family} has no true CFG")
        if self.modes is not None and (extra := set(self.modes) - set(row.modes)):
            raise ValueError(f"modes: family {self.family} lacks {', '.join(sorted(extra))}")
        return self

    @property
    def rules(self) -> Family:
        """The row of this model's family in the family table."""
        return FAMILIES[self.family]

    def defaults(self) -> dict[str, Any]:
        """The request defaults of this model: the family's, overridden by the entry's own (a field neither gives,
        such as `true_cfg_scale` outside FLUX and Qwen-Image, is left out)."""
        own = {name: value for name in DEFAULT_FIELDS if (value := getattr(self, name)) is not None}
        family = {name: value for name, value in self.rules.defaults.as_dict().items() if value is not None}
        return family | own

    def capabilities(self) -> dict[str, Any]:
        """What `GET /models` shows of the rules this model keeps: its family's, with its own modes and default
        size."""
        defaults = self.defaults()
        caps = self.rules.capabilities()
        caps["default_size"] = [defaults["width"], defaults["height"]]
        if self.modes is not None:
            caps["modes"] = [mode for mode in caps["modes"] if mode in self.modes]
            caps["samplers_by_mode"] = self.rules.samplers_by_mode(caps["modes"])
        return caps


class ModelsFile(BaseModel):
    """The whole file: `[models.<name>]` tables."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelEntry] = Field(default_factory=dict)


# Built in, whatever the file says: the demo model draws 64x64 pictures and was measured at 20 Euler steps, guidance 4
# (its model card).
BUILTIN_MODELS = {
    "demo": ModelEntry(source="demo", width=64, height=64, steps=20, sampler=Sampler.EULER, guidance_scale=4.0),
    # Its flow-matching sibling (FLUX-style, trained without distilled guidance): classifier-free guidance is
    # `true_cfg_scale`, measured at 20 `flow_euler` steps (its model card); `guidance_scale` is not read.
    "demo-flow": ModelEntry(
        source="demo-flow",
        family=ModelFamily.FLUX,
        width=64,
        height=64,
        steps=20,
        sampler=Sampler.FLOW_EULER,
        true_cfg_scale=4.0,
    ),
    "tiny": ModelEntry(source="tiny"),
    # The tiny models of the flow-matching families (worker/pipeline builds them from their family's config, shrunk):
    # named here so that the API holds their requests to their family's rules.
    "tiny-flux": ModelEntry(source="tiny-flux", family=ModelFamily.FLUX),
    "tiny-sd3": ModelEntry(source="tiny-sd3", family=ModelFamily.SD3),
    "tiny-qwen-image": ModelEntry(source="tiny-qwen-image", family=ModelFamily.QWEN_IMAGE),
}


class ModelsFileError(ValueError):
    """The models file cannot be read or does not follow the format."""


@lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> dict[str, ModelEntry]:
    try:
        parsed = ModelsFile.model_validate(tomllib.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ModelsFileError(f"models file {path}: {exc}") from exc
    return parsed.models


def model_entries(settings: Settings) -> dict[str, ModelEntry]:
    """Every model this deployment knows by name: the built-in ones, then the models file's (which may redefine
    them)."""
    entries = dict(BUILTIN_MODELS)
    if settings.models_file is not None:
        path = settings.models_file.expanduser()
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise ModelsFileError(f"models file {path}: {exc}") from exc
        entries |= _read(str(path), mtime)
    return entries


def served_entry(settings: Settings, entries: dict[str, ModelEntry] | None = None) -> tuple[str, ModelEntry]:
    """The name and entry of the model `settings.model` selects: an entry of the file by name, else an entry made
    from the id or path itself (of family `settings.model_family`). `entries`: `model_entries(settings)`, when
    already read."""
    entries = model_entries(settings) if entries is None else entries
    if settings.model in entries:
        return settings.model_name or settings.model, entries[settings.model]
    return settings.served_model_name(), ModelEntry(source=settings.model, family=settings.model_family)


def entry_of(settings: Settings, name: str, entries: dict[str, ModelEntry]) -> ModelEntry | None:
    """The entry behind a public model name: the default model's, else the models file's (or a built-in one); None
    for a model known only from its workers."""
    default_name, default_entry = served_entry(settings, entries)
    return default_entry if name == default_name else entries.get(name)


def with_served_model(settings: Settings) -> Settings:
    """`settings` with `model` resolved to the entry's source and `model_name` to its name (what a worker serves)."""
    name, entry = served_entry(settings)
    update = {"model": entry.source, "model_name": name, "model_family": entry.family.value}
    if entry.safety_checker:
        update["safety_checker"] = True
    return settings.model_copy(update=update)
