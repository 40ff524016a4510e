"""Running requests through the resident pipeline: sampler, per-image seeds, several compatible jobs in one call, in
any mode (text-to-image, img2img, inpainting) on pipelines that share the resident components."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline
from PIL import Image

from core.schemas import GenerateRequest, GenerationMode
from worker.batching import batch_key, split_counts
from worker.pipeline.families import FamilyAdapter, detect_family, family_adapter
from worker.pipeline.prompts import LongPrompts, prompt_arguments
from worker.pipeline.safety import FILTERED_INFO_KEY
from worker.pipeline.samplers import build_scheduler

# Called after each denoising iteration with (iterations done, total, latents of the whole batch); returns True to
# stop the run.
StepHook = Callable[[int, int, torch.Tensor], bool]
# A request's input images by field (`init_image`, `image`, `mask_image`), decoded.
Inputs = Mapping[str, Image.Image]

_MODE_PIPELINES: weakref.WeakKeyDictionary[DiffusionPipeline, dict[GenerationMode, DiffusionPipeline]] = (
    weakref.WeakKeyDictionary()
)


def mode_pipeline(pipeline: DiffusionPipeline, mode: GenerationMode) -> DiffusionPipeline:
    """The pipeline that runs `mode` over the same components as `pipeline` (`from_pipe`: no second copy of any
    weight), built once per resident pipeline."""
    if mode is GenerationMode.TXT2IMG:
        return pipeline
    built = _MODE_PIPELINES.setdefault(pipeline, {})
    if mode not in built:
        auto = AutoPipelineForImage2Image if mode is GenerationMode.IMG2IMG else AutoPipelineForInpainting
        variant = auto.from_pipe(pipeline)
        variant.set_progress_bar_config(disable=True)
        built[mode] = variant
    return built[mode]


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image. CPU generators give the same initial noise on every device for a seed."""
    return [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]


def _fit(image: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    image = image.convert(mode)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _each_image(
    requests: Sequence[GenerateRequest], inputs: Sequence[Inputs], field: str, colour_mode: str
) -> list[Image.Image]:
    """One input image per output image: each request's `field`, fitted to the batch's size, `num_images` times."""
    size = (requests[0].width, requests[0].height)
    return [
        _fit(given[field], size, colour_mode)
        for request, given in zip(requests, inputs, strict=True)
        for _ in range(request.num_images)
    ]


def _mode_arguments(
    requests: Sequence[GenerateRequest], inputs: Sequence[Inputs], sizes_img2img: bool = False
) -> dict[str, Any]:
    """The size and image arguments of the call for the batch's mode (img2img takes its size from its images)."""
    first = requests[0]
    if first.mode is GenerationMode.TXT2IMG:
        return {"width": first.width, "height": first.height}
    if first.mode is GenerationMode.IMG2IMG:
        images = {"strength": first.strength, "image": _each_image(requests, inputs, "init_image", "RGB")}
        if sizes_img2img:
            images.update(width=first.width, height=first.height)
        return images
    return {
        "strength": first.strength,
        "image": _each_image(requests, inputs, "image", "RGB"),
        "mask_image": _each_image(requests, inputs, "mask_image", "L"),
        "width": first.width,
        "height": first.height,
    }


def keep_unmasked(generated: Image.Image, image: Image.Image, mask: Image.Image) -> Image.Image:
    """Inpainting's result: the generated pixels where the mask is white, the input's where it is black (blended in
    between), so what was not to be repainted comes back exactly as sent rather than through the VAE."""
    result = Image.composite(generated, image, mask)
    result.info.update(generated.info)
    return result


def _text_arguments(
    runner: DiffusionPipeline,
    adapter: FamilyAdapter,
    first: GenerateRequest,
    prompts: list[str],
    negatives: list[str],
    long_prompts: LongPrompts,
) -> dict[str, Any]:
    """The prompt arguments of the call: the SD line's through `prompt_arguments` (truncated or chunked CLIP); for
    the T5 families the texts with `max_sequence_length`, and the negative prompts where the family takes them (FLUX
    and Qwen-Image: only with true CFG on, then one per image, empty where none was given)."""
    if adapter.max_sequence_length is None:
        return prompt_arguments(runner, prompts, negatives, long_prompts, runner.device)
    arguments: dict[str, Any] = {"prompt": prompts, "max_sequence_length": adapter.sequence_length(runner)}
    if adapter.takes_negative_prompts(first):
        arguments["negative_prompt"] = negatives
    return arguments


def generate_batch(
    pipeline: DiffusionPipeline,
    base_scheduler_config: dict[str, Any],
    requests: Sequence[GenerateRequest],
    on_step: StepHook | None = None,
    inputs: Sequence[Inputs] | None = None,
    long_prompts: LongPrompts = "truncate",
    adapter: FamilyAdapter | None = None,
) -> list[list[Image.Image]]:
    """The images of each request, from one pipeline call over all of them (they must share a batch key).

    Every image keeps its own prompt, negative prompt, seeded generator and input images, so a request's images equal
    what it gets alone, within floating-point tolerance. When `on_step` returns True the denoising loop stops at that
    step boundary (diffusers' interrupt flag); the images returned then are not meant to be used. `adapter`: the
    pipeline's family adapter (detected from the pipeline when not given); it says how guidance, negative prompts,
    the text encoder's sequence length and the step callback's latents go for the family.
    """
    first = requests[0]
    if any(batch_key(request) != batch_key(first) for request in requests):
        raise ValueError("requests of one batch must share model, mode, size, steps, sampler, guidance and strength")
    if any(request.true_cfg_scale != first.true_cfg_scale for request in requests):
        raise ValueError("requests of one batch must share true_cfg_scale")
    adapter = adapter if adapter is not None else family_adapter(detect_family(pipeline))
    inputs = inputs if inputs is not None else [{} for _ in requests]
    runner = mode_pipeline(pipeline, first.mode)
    runner.scheduler = build_scheduler(first.sampler, base_scheduler_config)
    prompts = [r.prompt for r in requests for _ in range(r.num_images)]
    negatives = [r.negative_prompt for r in requests for _ in range(r.num_images)]
    seeds = [seed for r in requests for seed in r.image_seeds()]
    arguments = _mode_arguments(requests, inputs, adapter.img2img_takes_size)
    texts = _text_arguments(runner, adapter, first, prompts, negatives, long_prompts)

    def step_end(pipe: DiffusionPipeline, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        if on_step is not None:
            latents = adapter.unpack_latents(pipe, callback_kwargs["latents"], first.width, first.height)
            if on_step(step_index + 1, pipe.num_timesteps, latents):
                pipe._interrupt = True  # the one place a private attribute is touched: diffusers' documented stop
        return callback_kwargs

    with torch.inference_mode():
        output = runner(
            num_inference_steps=first.steps,
            num_images_per_prompt=1,
            generator=seeded_generators(seeds),
            output_type="pil",
            callback_on_step_end=step_end,
            **adapter.guidance_arguments(runner, first),
            **texts,
            **arguments,
        )
    images = list(output.images)
    flagged = getattr(output, "nsfw_content_detected", None)
    if flagged is not None:  # a safety checker ran: say which images it blacked out
        for image, hit in zip(images, flagged, strict=True):
            image.info[FILTERED_INFO_KEY] = bool(hit)
    if first.mode is GenerationMode.INPAINT:
        images = [
            keep_unmasked(generated, image, mask)
            for generated, image, mask in zip(images, arguments["image"], arguments["mask_image"], strict=True)
        ]
    return [images[part] for part in split_counts(requests)]


def generate_images(
    pipeline: DiffusionPipeline,
    base_scheduler_config: dict[str, Any],
    request: GenerateRequest,
    on_step: StepHook | None = None,
    inputs: Inputs | None = None,
    long_prompts: LongPrompts = "truncate",
    adapter: FamilyAdapter | None = None,
) -> list[Image.Image]:
    """The images of one request (a batch of one)."""
    return generate_batch(pipeline, base_scheduler_config, [request], on_step, [inputs or {}], long_prompts, adapter)[0]
