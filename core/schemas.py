"""Request and response models shared by the API and the workers: one schema per concept."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator
from pydantic_core import PydanticCustomError

from core.families import BASE_DEFAULTS, DEFAULT_FAMILY, FAMILIES, Family, Guidance, Mode, NegativePromptSupport
from core.fields import (
    SEED_MAX,
    STEPS_MAX,
    GuidanceScale,
    ImageSide,
    NegativePrompt,
    NumImages,
    Prompt,
    Seed,
    Steps,
    Strength,
    TrueCfgScale,
)
from core.samplers import Sampler, samplers_for


class OutputFormat(StrEnum):
    """Encodings of result images."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def content_type(self) -> str:
        """The HTTP content type of images in this format."""
        return f"image/{self.value}"


class JobStatus(StrEnum):
    """Where a job is in its life: queued → running → succeeded | failed | canceled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # waited in the queue past its queue TTL and never ran

    def is_terminal(self) -> bool:
        """True once the job will not change again."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED)


WebhookEventType = Literal["queued", "started", "step", "succeeded", "failed", "canceled", "expired", "requeued"]
DEFAULT_WEBHOOK_EVENTS = ("succeeded", "failed", "canceled", "expired")


# Request fields that carry an input image: base64 (or a `data:` URL) in the client's JSON, a multipart file part, or
# once accepted, the `sha256:<hex>` reference of the bytes the API stored beside the job (core/keys.job_input_key).
IMAGE_FIELDS = ("init_image", "image", "mask_image")
INPUT_REFERENCE_PREFIX = "sha256:"
InputImage = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=64 * 1024 * 1024,
        description="PNG, JPEG or WebP as base64 (or a data: URL), or a multipart file part of the same name.",
    ),
]


def _field_conflict(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule's error, naming the field at fault (`ctx.field`) rather than the whole body."""
    return PydanticCustomError("field_conflict", message, {"field": field})


class GenerationMode(StrEnum):
    """What a request asks for, from which image fields it sets."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"  # init_image (+ strength)
    INPAINT = "inpaint"  # image + mask_image (+ strength)


class LoraSpec(BaseModel):
    """A LoRA adapter to apply while the job runs: a file `<name>.safetensors` in the worker's LoRA folder."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    scale: float = Field(default=1.0, ge=-4.0, le=4.0, allow_inf_nan=False)


class GenerateRequest(BaseModel):
    """A text-to-image request, as the API validates it and the worker receives it."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    # Left out: the default family's values here; the API then gives the request its model's own (core/families.py).
    width: ImageSide = BASE_DEFAULTS.width
    height: ImageSide = BASE_DEFAULTS.height
    steps: Steps = BASE_DEFAULTS.steps
    guidance_scale: GuidanceScale = BASE_DEFAULTS.guidance_scale
    true_cfg_scale: TrueCfgScale | None = Field(
        default=BASE_DEFAULTS.true_cfg_scale,
        description="FLUX and Qwen-Image: true classifier-free guidance (a second, negative pass per step) when > 1; "
        "a negative prompt needs it. Absent: the model's default (Qwen-Image 4.0, FLUX off). Other families: refused.",
    )
    sampler: Sampler = BASE_DEFAULTS.sampler
    seed: Seed | None = Field(default=None, description="Absent: a random seed, recorded.")
    num_images: NumImages = 1
    output_format: OutputFormat = OutputFormat.PNG
    output_quality: int | None = Field(default=None, ge=1, le=100, description="JPEG/WebP quality (92/90 by default).")
    model: str | None = Field(default=None, min_length=1, max_length=100, description="Absent: the default model.")
    preview_every: int = Field(default=0, ge=0, le=STEPS_MAX, description="0: no previews; k: a preview every k steps.")
    max_wait_seconds: float | None = Field(
        default=None, gt=0, le=86400, allow_inf_nan=False, description="Refuse (429) when the predicted start is later."
    )
    queue_ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Expire the job if it has not started by then (default: the server's).",
    )
    webhook_url: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://", description="Where to POST signed job events."
    )
    webhook_events: list[WebhookEventType] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1, max_length=8
    )
    init_image: InputImage = None
    image: InputImage = None
    mask_image: InputImage = Field(default=None, description="Inpainting: white repaints, black keeps the image.")
    strength: Strength = 0.8
    loras: list[LoraSpec] = Field(default_factory=list, max_length=4)
    reproducible: bool = Field(
        default=False,
        description="Run alone, never batched with other jobs, so that a re-run from the job's record gives the same "
        "pixels bit for bit (batched kernels may differ by one level). The job's `batch_size` says how it ran.",
    )

    @model_validator(mode="after")
    def _check_mode(self) -> GenerateRequest:
        # Cross-field rules name the field at fault in their context (`ctx.field`), which the API's errors report.
        if self.init_image is not None and (self.image is not None or self.mask_image is not None):
            raise _field_conflict(
                "init_image", "give init_image (img2img) or image and mask_image (inpainting), not both"
            )
        if (self.image is None) != (self.mask_image is None):
            missing = "mask_image" if self.mask_image is None else "image"
            raise _field_conflict(missing, "inpainting needs both image and mask_image")
        if self.mode is not GenerationMode.TXT2IMG and int(self.steps * self.strength) < 1:
            runs = self.steps * self.strength
            raise _field_conflict("strength", f"steps*strength = {runs:g} runs no step; it must be >= 1")
        names = [lora.name for lora in self.loras]
        if len(set(names)) != len(names):
            raise _field_conflict("loras", "each adapter may appear once")
        return self

    def check_as_sent(self) -> None:
        """Rules on the fields a client set, which only the request as it arrived can tell (a stored request read
        back has every field set): `strength` only with an input image. Its default is let through, so that a job's
        recorded request (which holds every field) can be sent again as it is. Raises `FieldError`."""
        default_strength = type(self).model_fields["strength"].default
        set_strength = "strength" in self.model_fields_set and self.strength != default_strength
        if self.mode is GenerationMode.TXT2IMG and set_strength:
            raise FieldError(
                "strength",
                "applies only with an input image (init_image, or image and mask_image)",
                type="strength_without_image",
            )

    @property
    def mode(self) -> GenerationMode:
        """txt2img, img2img or inpaint, from the image fields set."""
        if self.init_image is not None:
            return GenerationMode.IMG2IMG
        if self.image is not None:
            return GenerationMode.INPAINT
        return GenerationMode.TXT2IMG

    @property
    def denoise_strength(self) -> float:
        """The share of the steps that run: `strength` for img2img and inpainting, 1 for text-to-image."""
        return 1.0 if self.mode is GenerationMode.TXT2IMG else self.strength

    def image_fields(self) -> dict[str, str]:
        """The input-image fields this request sets, with their values."""
        return {name: value for name in IMAGE_FIELDS if (value := getattr(self, name)) is not None}

    def image_seeds(self) -> list[int]:
        """Seed of each image: `seed + i` (mod 2^32) for image i, so image 0 equals a 1-image job's."""
        if self.seed is None:
            raise ValueError("the seed is assigned at submission")
        return [(self.seed + i) % (SEED_MAX + 1) for i in range(self.num_images)]


class Progress(BaseModel):
    """Denoising progress of a job."""

    step: int = 0
    total: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fraction(self) -> float:
        """Share of steps done, 0..1."""
        return self.step / self.total if self.total else 0.0


class Timings(BaseModel):
    """When the job was accepted, started and finished (UTC)."""

    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobError(BaseModel):
    """Why a job failed: a stable code (`out_of_memory`, `invalid_request`, `internal`, `worker_lost`)."""

    code: str
    message: str


class Provenance(BaseModel):
    """What a job's images depend on besides its request (recorded by the worker when the job starts)."""

    model: str
    model_source: str
    model_hash: str = Field(description="SHA-256 over the model's files (large files: size and edges).")
    scheduler: str
    scheduler_config: dict[str, Any]
    libraries: dict[str, str]
    device: str
    dtype: str


class Job(BaseModel):
    """A job as stored in Redis and returned by `GET /jobs/{id}`."""

    id: str
    status: JobStatus
    model: str
    request: GenerateRequest
    seed: int
    queue_position: int | None = Field(default=None, description="Jobs ahead of this one, while queued.")
    start_eta_seconds: float | None = Field(default=None, description="While queued: predicted seconds until start.")
    eta_seconds: float | None = Field(default=None, description="Predicted seconds until finished (queued, running).")
    cancel_requested: bool = False
    attempts: int = Field(default=0, description="How many times a worker started the job.")
    batch_size: int | None = Field(
        default=None,
        description="How many jobs shared its pipeline call (1: it ran alone; set once it runs). Only a job that ran "
        "alone is reproduced bit for bit by a re-run; batched, pixels may differ by one level.",
    )
    warnings: list[str] = Field(default_factory=list)
    provenance: Provenance | None = None
    progress: Progress
    timings: Timings
    images: list[str] = Field(default_factory=list, description="URLs of the result images, once succeeded.")
    images_b64: list[str] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The result images as base64, in the order of `images`: only in the answer of `POST /generate` "
        "with `Prefer: wait` and `?response_format=b64_json` when the job succeeded in time; absent otherwise.",
    )
    content_filtered: list[bool] = Field(
        default_factory=list,
        description="Per image, when the model's safety checker ran and flagged any: True for an image it replaced "
        "with a black one. Empty when nothing was flagged.",
    )
    error: JobError | None = None
    worker_id: str | None = None
    owner: str | None = Field(default=None, exclude=True)  # the API key id that created it; never shown


class JobList(BaseModel):
    """A page of `GET /jobs`: the caller's jobs, newest first, and the cursor of the next page."""

    jobs: list[Job]
    next_cursor: str | None = Field(
        default=None,
        description="Send as `cursor` for the next page; null when there is none. A page may hold fewer jobs than "
        "`limit` while this is set (a selective filter over a long history): keep following it.",
    )


class ErrorDetail(BaseModel):
    """The body of every error response."""

    code: str
    message: str
    details: list[dict[str, Any]] = Field(
        default_factory=list,
        description="One object per problem: its `message`, the `field` at fault when one is, and what helps fix it.",
    )


class ErrorResponse(BaseModel):
    """`{"error": {"code", "message", "details"}}`: the one shape of every 4xx and 5xx answer (outside the
    OpenAI-compatible `/v1/...` routes, which answer in OpenAI's: service/errors.py)."""

    error: ErrorDetail


class WorkerInfo(BaseModel):
    """What a live worker says about itself in its heartbeat."""

    id: str
    model: str
    source: str
    samplers: list[Sampler]
    device: str
    dtype: str
    state: str
    loras: list[str] = Field(default_factory=list)
    current_jobs: list[str] = Field(default_factory=list)
    started_at: datetime
    heartbeat_at: datetime


class ModelCapabilities(BaseModel):
    """The rules a model's requests keep, from its family's row of the family table (core/families.py) and its
    models-file entry's `modes`; a model of unknown family has the sd15 row's."""

    modes: list[Mode] = Field(description="The generation modes it serves: txt2img, img2img (init_image), inpaint.")
    samplers: list[Sampler] = Field(description="The samplers that fit its family (in at least one mode).")
    samplers_by_mode: dict[Mode, list[Sampler]] = Field(
        description="Per mode it serves, the samplers that run it (the multistep flow solvers: text-to-image only)."
    )
    negative_prompt: NegativePromptSupport = Field(
        description="yes; true_cfg: only with true_cfg_scale > 1 (a second pass per step); no: refused."
    )
    guidance: Guidance = Field(
        description="What guidance_scale is: cfg (classifier-free guidance), distilled (a strength the model takes "
        "as an input, FLUX), none (no guidance: turbo)."
    )
    true_cfg: bool = Field(description="Whether it takes true_cfg_scale (FLUX, Qwen-Image).")
    size_multiple: int = Field(description="width and height must be multiples of it.")
    max_prompt_tokens: int = Field(description="What the text encoder reads; the rest is truncated with a warning.")
    default_size: list[int] = Field(description="[width, height] a request that leaves them out gets.")
    max_size: int = Field(description="The longest side it takes (IMAGEGEN_MAX_PIXELS bounds width*height too).")


def _default_capabilities() -> ModelCapabilities:
    return ModelCapabilities.model_validate(FAMILIES[DEFAULT_FAMILY].capabilities())


class ModelInfo(BaseModel):
    """A model this deployment knows (the default, the models file's, any a live worker serves), as `GET /models`
    lists it: its family, the defaults a request gets, the rules it keeps, and its live workers."""

    name: str
    family: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict, description="What a request that leaves them out gets.")
    capabilities: ModelCapabilities = Field(default_factory=_default_capabilities)
    workers: int
    worker_ids: list[str] = Field(default_factory=list)
    samplers: list[Sampler] = Field(description="The samplers its live workers offer.")
    devices: list[str]
    loras: list[str] = Field(default_factory=list, description="LoRA adapters its workers have.")


class Health(BaseModel):
    """Body of `/healthz` and `/readyz`."""

    status: str
    redis: str | None = None


class FieldError(ValueError):
    """A request field that is wrong for a reason its schema alone cannot see; the API answers 422 naming `field`."""

    def __init__(
        self, field: str, message: str, *, type: str = "value_error", allowed: list[Any] | None = None
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.type = type
        self.allowed = allowed  # the values that would do, where a list says it


class LimitExceededError(FieldError):
    """A request within its schema but beyond a configured limit of this deployment."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, type="limit_exceeded")


def check_limits(request: GenerateRequest, *, max_pixels: int) -> None:
    """Raise `LimitExceededError` when the request needs more than this deployment allows."""
    pixels = request.width * request.height
    if pixels > max_pixels:
        raise LimitExceededError(
            "width*height",
            f"{request.width}x{request.height} = {pixels} pixels is over the limit of {max_pixels} pixels",
        )


# The request field that asks for each mode: a refused mode is reported against it.
_MODE_FIELDS = {GenerationMode.IMG2IMG: "init_image", GenerationMode.INPAINT: "image"}


def check_family_rules(
    request: GenerateRequest, rules: Family, *, family: str, modes: list[Mode] | tuple[Mode, ...] | None = None
) -> None:
    """Raise `FieldError` naming the field when `request` (its model's defaults applied) breaks the rules of its
    model's family (`rules`, the row of `family`); `modes` narrows the family's modes for one model. A prompt past the
    family's `max_prompt_tokens` is no error: the worker truncates it and warns."""
    for side in ("width", "height"):
        value = getattr(request, side)
        if value % rules.size_multiple:
            raise FieldError(
                side,
                f"must be a multiple of {rules.size_multiple} for a {family} model, got {value}",
                type="size_multiple",
            )
        if value > rules.max_size:
            raise FieldError(side, f"at most {rules.max_size} for a {family} model, got {value}", type="max_size")
    mode = request.mode.value
    served = rules.modes if modes is None else modes
    if mode not in served:
        raise FieldError(
            _MODE_FIELDS.get(request.mode, "prompt"),
            f"this model does not do {mode}; it does {', '.join(served)}",
            type="mode_unsupported",
            allowed=list(served),
        )
    if not request.sampler.fits(family, mode):
        fitting = [sampler.value for sampler in samplers_for(family, mode)]
        where = f"{mode} on a {family} model" if request.sampler.fits(family) else f"a {family} model"
        raise FieldError(
            "sampler",
            f"{request.sampler.value} does not fit {where}; use one of {', '.join(fitting)}",
            type="sampler_unsupported",
            allowed=fitting,
        )
    if request.true_cfg_scale is not None and not rules.true_cfg:
        raise FieldError(
            "true_cfg_scale",
            f"a {family} model has no true CFG (only {', '.join(f for f, row in FAMILIES.items() if row.true_cfg)})",
            type="true_cfg_unsupported",
        )
    if request.negative_prompt.strip():
        if rules.negative_prompt == "no":
            raise FieldError(
                "negative_prompt",
                f"a {family} model runs without classifier-free guidance: it takes no negative prompt",
                type="negative_prompt_unsupported",
            )
        if rules.negative_prompt == "true_cfg" and (request.true_cfg_scale or 1.0) <= 1.0:
            raise FieldError(
                "negative_prompt",
                f"a {family} model uses a negative prompt only with true CFG: set true_cfg_scale > 1 (e.g. 4)",
                type="negative_prompt_needs_true_cfg",
            )
