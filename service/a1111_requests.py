"""The AUTOMATIC1111 request bodies of `/sdapi/v1/txt2img` and `/img2img` (A1111's field names and defaults), and
their mapping onto a `GenerateRequest`.

Clients send every A1111 field with its default (the `webuiapi` client does). A field this service has no use for is
accepted at A1111's default (or at a value that means what this service does anyway) and ignored; set to anything
else it is refused with a 422 that names it and says why, never dropped in silence. The table `_ONLY_AT_DEFAULT`
says which fields and values; docs/api.md#automatic1111-api-subset renders the same rules for people.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.families import family_row
from core.fields import NUM_IMAGES_MAX
from core.samplers import Sampler, a1111_scheduler, from_a1111, samplers_for
from core.schemas import FieldError, GenerateRequest, GenerationMode, LimitExceededError

# A1111 shows a step preview every `show_progress_every_n_steps` (10 by default, with live previews on): its jobs ask
# for a latent preview as often, which `GET /sdapi/v1/progress` returns as `current_image`.
A1111_PREVIEW_EVERY = 10
RANDOM_SEED = -1
# `override_settings` and `POST /options` keys taken at the value this service runs with (A1111's defaults).
ACCEPTED_OPTIONS: dict[str, Any] = {"CLIP_stop_at_last_layers": 1, "samples_format": "png", "eta_noise_seed_delta": 0}
MODEL_OPTION = "sd_model_checkpoint"
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?>")


class A1111Request(BaseModel):
    """The fields txt2img and img2img share, with A1111's defaults (`StableDiffusionProcessing`)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = Field(default=RANDOM_SEED, description="-1: a random seed (reported in `info.seed`).")
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = Field(default=None, description="A1111's display name (`Euler a`, `DPM++ 2M Karras`).")
    sampler_index: str = "Euler"
    scheduler: str | None = Field(default=None, description="None or `automatic`: as named; `karras`.")
    batch_size: int = Field(default=1, ge=1)
    n_iter: int = Field(default=1, ge=1)
    steps: int = 50
    cfg_scale: float = 7.0
    distilled_cfg_scale: float | None = Field(
        default=None, description="Forge's field: FLUX's distilled guidance (`guidance_scale`); absent: the model's."
    )
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None

    def model_option(self) -> str | None:
        """The model `override_settings.sd_model_checkpoint` picks for this call, if any."""
        value = (self.override_settings or {}).get(MODEL_OPTION)
        return str(value) if value else None


class Txt2ImgRequest(A1111Request):
    """`POST /sdapi/v1/txt2img` (`StableDiffusionProcessingTxt2Img`); the hires. fix fields count only with
    `enable_hr`, which is refused."""

    enable_hr: bool = False
    denoising_strength: float | None = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgRequest(A1111Request):
    """`POST /sdapi/v1/img2img` (`StableDiffusionProcessingImg2Img`): one init image; with `mask`, inpainting."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


def _one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda value: value in values


def _not_positive(value: Any) -> bool:
    return value is None or value <= 0


def _empty(value: Any) -> bool:
    return not value


# Field -> (whether a value is one this service takes: A1111's default, what webuiapi sends, or what the service does
# anyway; why any other is refused). Fields not here are used (see `to_generate_request`) or, like the hires. fix
# settings without `enable_hr`, ignored by A1111 itself.
_ONLY_AT_DEFAULT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "enable_hr": (_one_of(False), "hires. fix (a second, upscaled pass) is not available here"),
    "restore_faces": (_one_of(None, False), "face restoration is not available here"),
    "tiling": (_one_of(None, False), "tiling is not available here"),
    "styles": (_empty, "saved prompt styles are not available here"),
    "subseed_strength": (_one_of(0), "variation seeds (subseed_strength > 0) are not available here"),
    "seed_resize_from_h": (_not_positive, "resizing the seed's noise is not available here"),
    "seed_resize_from_w": (_not_positive, "resizing the seed's noise is not available here"),
    "eta": (_one_of(None, 1), "the samplers run at their own eta (ancestral 1, DDIM 0); set none or 1"),
    "s_min_uncond": (_one_of(None, 0), "sampler settings s_* are not available here"),
    "s_churn": (_one_of(None, 0), "sampler settings s_* are not available here"),
    "s_tmax": (_one_of(None, 0), "sampler settings s_* are not available here"),
    "s_tmin": (_one_of(None, 0), "sampler settings s_* are not available here"),
    "s_noise": (_one_of(None, 1), "sampler settings s_* are not available here"),
    "refiner_checkpoint": (_one_of(None, "", "None"), "a refiner model is not available here"),
    "firstpass_image": (_empty, "a first-pass image (hires. fix) is not available here"),
    "comments": (_empty, "comments are not written here"),
    "save_images": (_one_of(False), "images are kept in this service's store (GET /jobs), not saved to disk"),
    "script_name": (_empty, "scripts are not available here"),
    "alwayson_scripts": (_empty, "always-on scripts (ControlNet, ADetailer, ...) are not available here"),
    "force_task_id": (_empty, "task ids are not available here: progress follows the caller's latest job"),
    "infotext": (_empty, "filling fields from an infotext is not available here"),
    "resize_mode": (_one_of(0), "only resize_mode 0 (just resize) is available here"),
    "inpainting_fill": (
        _one_of(0, 1),
        "the masked area starts from the image (0 fill, 1 original); latent noise and nothing are not available",
    ),
    "initial_noise_multiplier": (_one_of(None, 1), "a noise multiplier is not available here"),
    "latent_mask": (_empty, "a separate latent mask is not available here"),
    "inpainting_mask_invert": (_one_of(0), "send the mask inverted instead (white repaints, black keeps)"),
    # The mask goes to the inpainting pipeline as sent: no blur (0 or A1111's default 4 taken, both as no blur).
    "mask_blur": (_one_of(None, 0, 4), "mask blur is not available here: the mask is used as sent (0, or 4 ignored)"),
    "mask_blur_x": (_one_of(0, 4), "mask blur is not available here: the mask is used as sent (0, or 4 ignored)"),
    "mask_blur_y": (_one_of(0, 4), "mask blur is not available here: the mask is used as sent (0, or 4 ignored)"),
}


def check_honourable(body: A1111Request) -> None:
    """Raise `FieldError` naming the first field set to a value this service cannot honour, with why."""
    for field in type(body).model_fields:
        rule = _ONLY_AT_DEFAULT.get(field)
        if rule is not None and not rule[0](getattr(body, field)):
            raise FieldError(field, f"{rule[1]} (got {getattr(body, field)!r})", type="a1111_unsupported")
    for key, value in (body.override_settings or {}).items():
        if key != MODEL_OPTION and ACCEPTED_OPTIONS.get(key, object()) != value:
            raise FieldError(f"override_settings.{key}", unsupported_option(key), type="a1111_unsupported")


def unsupported_option(key: str) -> str:
    """Why an A1111 option other than the model cannot be set here."""
    return (
        f"the option {key!r} cannot be set here; settable: {MODEL_OPTION} (and "
        + ", ".join(f"{name}={value!r}" for name, value in ACCEPTED_OPTIONS.items())
        + " as they are)"
    )


def split_loras(prompt: str) -> tuple[str, list[dict[str, Any]]]:
    """The prompt without its `<lora:name[:scale]>` tags (A1111's extra-network syntax), and the adapters they name."""
    loras: list[dict[str, Any]] = []
    for name, scale in _LORA_TAG.findall(prompt):
        try:
            loras.append({"name": name.strip(), "scale": float(scale) if scale else 1.0})
        except ValueError:
            raise FieldError("prompt", f"<lora:{name}:{scale}>: the scale is not a number") from None
    return " ".join(_LORA_TAG.sub(" ", prompt).split()) if loras else prompt, loras


def _sampler(body: A1111Request, family: str, mode: GenerationMode) -> Sampler:
    name = body.sampler_name or body.sampler_index
    sampler = from_a1111(name, body.scheduler, family, mode.value)
    if sampler is None:
        fitting = [f"{s.a1111_name}" for s in samplers_for(family, mode.value)]
        field = "scheduler" if from_a1111(name, None, family, mode.value) else "sampler_name"
        raise FieldError(
            field,
            f"{name!r}{f' with scheduler {body.scheduler!r}' if body.scheduler else ''} does not run {mode.value} "
            f"on a {family} model; "
            f"use one of {', '.join(dict.fromkeys(fitting))} (scheduler automatic, or karras where named)",
            type="sampler_unsupported",
            allowed=list(dict.fromkeys(fitting)),
        )
    return sampler


# Native field -> the A1111 field that set it (errors on these routes name A1111's).
A1111_FIELDS = {
    "guidance_scale": "cfg_scale",
    "true_cfg_scale": "cfg_scale",
    "num_images": "batch_size*n_iter",
    "strength": "denoising_strength",
    "init_image": "init_images",
    "image": "init_images",
    "mask_image": "mask",
    "sampler": "sampler_name",
    "model": MODEL_OPTION,
}


def as_a1111_errors(errors: list[Any]) -> list[Any]:
    """Pydantic errors of a native request with each location's field renamed to the A1111 field that set it."""
    renamed = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if loc and loc[0] in A1111_FIELDS:
            error = {**error, "loc": (A1111_FIELDS[str(loc[0])], *loc[1:])}
        named = (error.get("ctx") or {}).get("field")
        if named in A1111_FIELDS:
            error = {**error, "ctx": {**error["ctx"], "field": A1111_FIELDS[named]}}
        renamed.append(error)
    return renamed


def to_generate_request(body: A1111Request, model: str | None, family: str) -> GenerateRequest:
    """The native request for an A1111 body run on `model` (None: the default) of `family` (a `ModelFamily` value).
    Raises `FieldError` or `RequestValidationError` naming A1111's fields."""
    check_honourable(body)
    count = body.batch_size * body.n_iter
    if count > NUM_IMAGES_MAX:
        raise LimitExceededError(
            "batch_size*n_iter", f"{body.batch_size}*{body.n_iter} = {count} images; at most {NUM_IMAGES_MAX}"
        )
    mode = GenerationMode.TXT2IMG
    fields: dict[str, Any] = {}
    if isinstance(body, Img2ImgRequest):
        if not body.init_images:
            raise FieldError("init_images", "img2img needs one init image")
        if len(body.init_images) > 1:
            raise FieldError("init_images", f"one init image is available here, got {len(body.init_images)}")
        fields["strength"] = body.denoising_strength
        if body.mask:
            mode = GenerationMode.INPAINT
            fields["image"], fields["mask_image"] = body.init_images[0], body.mask
        else:
            mode = GenerationMode.IMG2IMG
            fields["init_image"] = body.init_images[0]
    prompt, loras = (body.prompt, []) if body.disable_extra_networks else split_loras(body.prompt)
    fields |= {
        "prompt": prompt,
        "negative_prompt": body.negative_prompt or "",
        "width": body.width,
        "height": body.height,
        "steps": body.steps,
        "sampler": _sampler(body, family, mode),
        "seed": None if body.seed == RANDOM_SEED else body.seed,
        "num_images": count,
        "model": model,
        "preview_every": A1111_PREVIEW_EVERY,
        "loras": loras,
    }
    if family_row(family).true_cfg:
        # As the A1111 line of tools (Forge) has it for FLUX and Qwen-Image: `CFG scale` is true CFG (1: off) and
        # `Distilled CFG Scale` the guidance the model takes as an input (worker/encoding.py writes them the same way).
        fields["true_cfg_scale"] = body.cfg_scale if body.cfg_scale > 1 else None
        if body.distilled_cfg_scale is not None:
            fields["guidance_scale"] = body.distilled_cfg_scale
    else:
        fields["guidance_scale"] = body.cfg_scale
        if body.distilled_cfg_scale is not None:
            raise FieldError("distilled_cfg_scale", f"a {family} model has no distilled guidance (FLUX has)")
    try:
        return GenerateRequest(**fields)
    except ValidationError as exc:
        raise RequestValidationError(as_a1111_errors(exc.errors(include_url=False))) from exc


def a1111_sampler_fields(sampler: Sampler) -> dict[str, str]:
    """`sampler_name` and `scheduler` of a sampler as A1111 reports them in `info`."""
    return {"sampler_name": sampler.a1111_name, "scheduler": a1111_scheduler(sampler)}
