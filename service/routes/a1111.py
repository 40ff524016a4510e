"""`/sdapi/v1/...`: a subset of the AUTOMATIC1111 web UI's API (txt2img, img2img with inpainting, progress,
interrupt, skip, sd-models, samplers, schedulers, scripts, options, png-info), answered through the same submission,
queue and workers as `POST /generate`. What is and is not supported: docs/api.md#automatic1111-api-subset."""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, Field
from redis import Redis

from core import keys
from core.catalog import ModelEntry, entry_of, model_entries, served_entry
from core.event_stream import latest_event
from core.families import DEFAULT_FAMILY
from core.jobs import JobStore
from core.samplers import A1111_KARRAS, Sampler, a1111_scheduler
from core.schemas import FieldError, Job, JobStatus
from core.settings import Settings
from core.sharding import RedisShards
from core.workers import live_workers_of
from service.a1111_infotext import UnreadableImageError, parse_infotext, read_infotext
from service.a1111_requests import (
    A1111_FIELDS,
    A1111_PREVIEW_EVERY,
    ACCEPTED_OPTIONS,
    MODEL_OPTION,
    A1111Request,
    Img2ImgRequest,
    Txt2ImgRequest,
    as_a1111_errors,
    to_generate_request,
    unsupported_option,
)
from service.auth import Caller, CallerDep
from service.deps import (
    JobStoreDep,
    RedisDep,
    ResultsDep,
    SettingsDep,
    ShardsDep,
    async_redis_for_job,
    job_store_for,
)
from service.errors import A1111ErrorResponse, ApiError
from service.queue_view import with_queue_view
from service.results import ResultImages
from service.submission import SubmissionClients, known_models, submit
from service.waiting import wait_or_cancel

router = APIRouter(
    prefix="/sdapi/v1",
    tags=["automatic1111"],
    responses={status: {"model": A1111ErrorResponse} for status in (400, 401, 413, 415, 422, 429, 499, 500, 503, 504)},
)

# The routes that take a JSON body (the request guard refuses others with 415); interrupt and skip take none.
JSON_BODY_ROUTES = ("txt2img", "img2img", "options", "png-info")
# Beyond the longest a job can wait and run (its queue TTL and the job timeout), a sync call stops waiting.
_WAIT_MARGIN_SECONDS = 30
# Options `GET /options` reports besides the model, and `POST /options` takes at these values.
_FIXED_OPTIONS: dict[str, Any] = {
    **ACCEPTED_OPTIONS,
    "show_progress_every_n_steps": A1111_PREVIEW_EVERY,
    "live_previews_enable": True,
}


class ImagesResponse(BaseModel):
    """A1111's `TextToImageResponse` / `ImageToImageResponse`."""

    images: list[str] = Field(description="PNG images, base64 (no data: prefix); empty when interrupted.")
    parameters: dict[str, Any] = Field(description="The request as read, every field with its value.")
    info: str = Field(description="JSON: seed, all_seeds, sampler_name, sd_model_name, infotexts, job_id, ...")


class ProgressResponse(BaseModel):
    """A1111's `ProgressResponse`, for the caller's latest job."""

    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None


class PngInfoRequest(BaseModel):
    """A1111's `PNGInfoRequest`."""

    image: str = Field(description="The image, base64 or a data: URL.")


class PngInfoResponse(BaseModel):
    """A1111's `PNGInfoResponse`."""

    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


def _owner(caller: Caller) -> str:
    return caller.key_id or "anonymous"


def _read(redis: Redis, key: str) -> str | None:
    value = redis.get(key)
    return value.decode() if isinstance(value, bytes) else value


def _checkpoint(name: str, known: list[str], field: str) -> str:
    """The model an A1111 checkpoint name means: a title or model name of `GET /sdapi/v1/sd-models` (a trailing
    ` [hash]` or file extension is let through); 422 naming `field` otherwise."""
    wanted = name.strip()
    for candidate in (wanted, wanted.rsplit(" [", 1)[0], wanted.removesuffix(".safetensors").removesuffix(".ckpt")):
        if candidate in known:
            return candidate
    raise FieldError(field, f"unknown model {name!r}; served models: {', '.join(known)}", allowed=known)


def _known(redis: list[Redis], settings: Settings) -> tuple[list[str], dict[str, ModelEntry]]:
    """The models a call may pick (every Redis's live workers: queues may be sharded by model) and the catalog."""
    entries = model_entries(settings)
    return known_models(settings, live_workers_of(redis), entries), entries


async def _submit(
    body: A1111Request, clients: SubmissionClients, store: JobStore, settings: Settings, caller: Caller
) -> Job:
    """Map the A1111 body onto the model it picks (`override_settings`, else the caller's `options`, else the
    default) and submit it as `POST /generate` would; remember it as the caller's current job. Reading every live
    worker's record (the models it may pick) runs in a thread; the rest waits on the asyncio clients."""
    known, entries = await anyio.to_thread.run_sync(_known, clients.sync.all(), settings)
    picked = body.model_option()
    if picked is not None:
        model: str | None = _checkpoint(picked, known, f"override_settings.{MODEL_OPTION}")
    else:
        chosen = await clients.aio.default.get(keys.a1111_model_key(_owner(caller)))
        model = chosen.decode() if chosen is not None else None
    entry = entry_of(settings, model or served_entry(settings, entries)[0], entries)
    family = entry.family.value if entry is not None else DEFAULT_FAMILY.value
    request = to_generate_request(body, model, family)
    try:
        job, _ = await submit(request, clients, store, settings, caller)
    except FieldError as exc:
        if exc.field not in A1111_FIELDS:
            raise
        raise FieldError(A1111_FIELDS[exc.field], exc.message, type=exc.type, allowed=exc.allowed) from exc
    except RequestValidationError as exc:
        raise RequestValidationError(as_a1111_errors(list(exc.errors()))) from exc
    lifetime = store.job_queue_ttl(job.request) + settings.job_timeout_seconds + settings.result_ttl_seconds
    await clients.aio.default.set(keys.a1111_current_job_key(_owner(caller)), job.id, ex=lifetime)
    return job


def _short_hash(job: Job) -> str | None:
    digest = job.provenance.model_hash.removeprefix("sha256:") if job.provenance else ""
    return digest[:10] or None


def _info(job: Job, body: A1111Request, images: list[bytes]) -> str:
    """A1111's `info` JSON of a finished job."""
    request = job.request
    count = request.num_images
    infotexts = []
    for data in images:
        try:
            infotexts.append(read_infotext(data)[0] or "")
        except UnreadableImageError:
            infotexts.append("")
    info = {
        "prompt": body.prompt,
        "all_prompts": [body.prompt] * count,
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [request.negative_prompt] * count,
        "seed": job.seed,
        "all_seeds": request.image_seeds(),
        "subseed": body.subseed,
        "all_subseeds": [body.subseed] * count,
        "subseed_strength": 0,
        "width": request.width,
        "height": request.height,
        "sampler_name": request.sampler.a1111_name,
        "scheduler": a1111_scheduler(request.sampler),
        "cfg_scale": body.cfg_scale,
        "steps": request.steps,
        "batch_size": body.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": job.model,
        "sd_model_hash": _short_hash(job),
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": request.strength if request.image_fields() else None,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": job.timings.created_at.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": "imagegen",
        # This service's own: the job behind the call (GET /jobs/{id}) and whether interrupt/skip ended it.
        "job_id": job.id,
        "interrupted": job.status is JobStatus.CANCELED,
    }
    return json.dumps(info)


def _parameters(body: A1111Request) -> dict[str, Any]:
    parameters = body.model_dump(mode="json")
    if isinstance(body, Img2ImgRequest) and not body.include_init_images:
        parameters["init_images"] = parameters["mask"] = None  # as A1111 answers unless asked to include them
    return parameters


def _finished(job_id: str, body: A1111Request, store: JobStore, results: ResultImages) -> ImagesResponse:
    """The answer for a job that ended: its images and info; interrupted (canceled): no images; else an error."""
    job = store.get(job_id)
    if job is None:
        raise ApiError(500, f"job {job_id} ended but its record is gone", code="internal")
    if job.status is JobStatus.SUCCEEDED:
        images = [results.image(job, i) or b"" for i in range(len(job.images))]
    elif job.status is JobStatus.CANCELED:
        images = []
    elif job.status is JobStatus.EXPIRED:
        raise ApiError(503, f"job {job.id} waited past its queue TTL and never ran; retry later", code="expired")
    else:
        error = job.error
        status = 400 if error is not None and error.code == "invalid_request" else 500
        message = error.message if error is not None else f"job {job.id} ended {job.status.value}"
        raise ApiError(status, message, code=error.code if error else "internal")
    encoded = [base64.b64encode(data).decode() for data in images] if body.send_images else []
    return ImagesResponse(images=encoded, parameters=_parameters(body), info=_info(job, body, images))


async def _generate(
    body: A1111Request,
    request: Request,
    store: JobStore,
    results: ResultImages,
    settings: Settings,
    caller: Caller,
) -> ImagesResponse:
    job = await _submit(body, SubmissionClients.of(request), store, settings, caller)
    store = job_store_for(request, job.id)  # the Redis of the job's model (queues sharded by model)
    timeout = store.job_queue_ttl(job.request) + settings.job_timeout_seconds + _WAIT_MARGIN_SECONDS
    await wait_or_cancel(async_redis_for_job(request, job.id), store, job.id, request.receive, timeout)
    return await run_in_threadpool(_finished, job.id, body, store, results)


@router.post("/txt2img", response_model=ImagesResponse)
async def txt2img(
    body: Txt2ImgRequest,
    request: Request,
    store: JobStoreDep,
    results: ResultsDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> ImagesResponse:
    """Generate `batch_size * n_iter` images and answer when they are done; the wait holds no server thread, and a
    client that goes away cancels its job."""
    return await _generate(body, request, store, results, settings, caller)


@router.post("/img2img", response_model=ImagesResponse)
async def img2img(
    body: Img2ImgRequest,
    request: Request,
    store: JobStoreDep,
    results: ResultsDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> ImagesResponse:
    """Redraw `init_images[0]` (with `mask`: inpaint where the mask is white) and answer when done."""
    return await _generate(body, request, store, results, settings, caller)


def _current_job(shards: RedisShards[Redis], settings: Settings, caller: Caller) -> tuple[Job, JobStore] | None:
    """The caller's latest A1111 job and the store of the Redis that holds it (queues sharded by model)."""
    job_id = _read(shards.default, keys.a1111_current_job_key(_owner(caller)))
    if not job_id:
        return None
    store = JobStore.from_settings(shards.for_job(job_id), settings)
    job = store.get(job_id)
    return (job, store) if job is not None else None


def _preview_png(redis: Redis, job_id: str) -> str | None:
    """The job's latest step preview as base64 PNG (A1111's `current_image` format), or None."""
    entry = latest_event(redis, job_id, "preview")
    if entry is None:
        return None
    data = base64.b64decode(json.loads(entry.data)["data"])
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@router.get("/progress", response_model=ProgressResponse)
def progress(
    shards: ShardsDep, settings: SettingsDep, caller: CallerDep, skip_current_image: bool = False
) -> ProgressResponse:
    """The caller's latest A1111 job while it is queued or running: fraction done, seconds left, step, and its
    latest step preview; idle (all zero) otherwise."""
    current_job = _current_job(shards, settings, caller)
    state: dict[str, Any] = {
        "skipped": False,
        "interrupted": False,
        "stopping_generation": False,
        "job": "",
        "job_count": 0,
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    }
    if current_job is None or current_job[0].status.is_terminal():
        return ProgressResponse(progress=0, eta_relative=0, state=state)
    job, store = current_job
    textinfo = None
    if job.status is JobStatus.QUEUED:
        job = with_queue_view(job, store.redis, store)
        textinfo = f"Waiting in the queue: {job.queue_position} jobs ahead"
    state |= {
        "interrupted": job.cancel_requested,
        "job": job.request.mode.value,
        "job_count": 1,
        "job_timestamp": job.timings.created_at.strftime("%Y%m%d%H%M%S"),
        "sampling_step": job.progress.step,
        "sampling_steps": job.progress.total,
    }
    running = job.status is JobStatus.RUNNING
    current = _preview_png(store.redis, job.id) if running and not skip_current_image else None
    return ProgressResponse(
        progress=job.progress.fraction,
        eta_relative=job.eta_seconds or 0.0,
        state=state,
        current_image=current,
        textinfo=textinfo,
    )


def _cancel_current(shards: RedisShards[Redis], settings: Settings, caller: Caller) -> None:
    current = _current_job(shards, settings, caller)
    if current is not None and not current[0].status.is_terminal():
        current[1].cancel(current[0].id)


@router.post("/interrupt")
def interrupt(shards: ShardsDep, settings: SettingsDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel the caller's latest A1111 job (queued: at once; running: at its next step). Its txt2img/img2img call
    then answers 200 with no images and `info.interrupted` true. Answers `{}`, as A1111 does."""
    _cancel_current(shards, settings, caller)
    return {}


@router.post("/skip")
def skip(shards: ShardsDep, settings: SettingsDep, caller: CallerDep) -> None:
    """The same as interrupt here: A1111 skips the current image of a batch, but a job's images run as one batch,
    so skipping it ends the job. Answers null, as A1111 does."""
    _cancel_current(shards, settings, caller)


@router.get("/sd-models")
def sd_models(shards: ShardsDep, settings: SettingsDep, caller: CallerDep) -> list[dict[str, Any]]:
    """Every model a call may pick (`GET /models`' names), in A1111's `SDModelItem` shape: `title` and
    `model_name` are the model's name; no hash is known to the API."""
    known, entries = _known(shards.all(), settings)
    models = []
    for name in known:
        entry = entry_of(settings, name, entries)
        models.append(
            {
                "title": name,
                "model_name": name,
                "hash": None,
                "sha256": None,
                "filename": entry.source if entry else name,
                "config": None,
            }
        )
    return models


@router.get("/samplers")
def samplers(shards: ShardsDep, settings: SettingsDep, caller: CallerDep) -> list[dict[str, Any]]:
    """The samplers of the known models' families, by A1111 display name (`aliases`: this API's names for it,
    one per family line; `options.scheduler`: `karras` for a Karras row)."""
    known, entries = _known(shards.all(), settings)
    families = set()
    for name in known:
        entry = entry_of(settings, name, entries)
        families.add(entry.family.value if entry else DEFAULT_FAMILY.value)
    rows: dict[str, dict[str, Any]] = {}
    for sampler in Sampler:
        if any(sampler.fits(family) for family in families):
            row = rows.setdefault(sampler.a1111_name, {"name": sampler.a1111_name, "aliases": [], "options": {}})
            row["aliases"].append(sampler.value)
            if a1111_scheduler(sampler) == A1111_KARRAS:
                row["options"]["scheduler"] = A1111_KARRAS
    return list(rows.values())


@router.get("/schedulers")
def schedulers(caller: CallerDep) -> list[dict[str, Any]]:
    """The A1111 `scheduler` values taken: `automatic` (the sampler's own) and `karras`."""
    return [
        {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1, "need_inner_model": False},
        {"name": A1111_KARRAS, "label": "Karras", "aliases": None, "default_rho": 7.0, "need_inner_model": False},
    ]


@router.get("/scripts")
def scripts(caller: CallerDep) -> dict[str, list[str]]:
    """No scripts are available (clients such as webuiapi ask at start-up)."""
    return {"txt2img": [], "img2img": []}


@router.get("/options")
def get_options(redis: RedisDep, settings: SettingsDep, caller: CallerDep) -> dict[str, Any]:
    """`sd_model_checkpoint`: the model the caller chose with `POST /options`, else the default; and the few fixed
    options this service runs with."""
    model = _read(redis, keys.a1111_model_key(_owner(caller))) or served_entry(settings)[0]
    return {MODEL_OPTION: model, "sd_checkpoint_hash": None, **_FIXED_OPTIONS}


def _set_options(
    options: dict[str, Any], redis: Redis, shards: RedisShards[Redis], settings: Settings, caller: Caller
) -> None:
    model = None
    for key, value in options.items():
        if key == MODEL_OPTION:
            model = _checkpoint(str(value), _known(shards.all(), settings)[0], MODEL_OPTION)
        elif _FIXED_OPTIONS.get(key, object()) != value:
            raise FieldError(key, unsupported_option(key), type="a1111_unsupported")
    if model is not None:
        redis.set(keys.a1111_model_key(_owner(caller)), model)


@router.post("/options")
def set_options(
    options: Annotated[dict[str, Any], Body()],
    redis: RedisDep,
    shards: ShardsDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> None:
    """Set `sd_model_checkpoint` (a title from `sd-models`) for this caller's later calls (per API key; one for
    everyone when auth is off); 422 for an unknown model or another option. Answers null, as A1111 does."""
    _set_options(options, redis, shards, settings, caller)


@router.post("/png-info", response_model=PngInfoResponse)
def png_info(body: PngInfoRequest, caller: CallerDep) -> PngInfoResponse:
    """The `parameters` text of an image (as this service and A1111 write it), parsed; `info` is empty when it has
    none."""
    encoded = body.image.strip()
    if encoded.startswith("data:"):
        encoded = encoded.partition(",")[2]
    try:
        text, items = read_infotext(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise FieldError("image", f"not a base64 PNG, JPEG or WebP image: {exc}") from exc
    return PngInfoResponse(info=text or "", items=items, parameters=parse_infotext(text) if text else {})
