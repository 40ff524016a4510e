"""Running requests through the resident pipeline: sampler, per-image seeds, several compatible jobs in one call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from core.schemas import GenerateRequest
from worker.batching import batch_key, split_counts
from worker.samplers import build_scheduler

# Called after each denoising iteration with (iterations done, total, latents of the whole batch); returns True to
# stop the run.
StepHook = Callable[[int, int, torch.Tensor], bool]


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image. CPU generators give the same initial noise on every device for a seed."""
    return [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]


def generate_batch(
    pipeline: DiffusionPipeline,
    base_scheduler_config: dict[str, Any],
    requests: Sequence[GenerateRequest],
    on_step: StepHook | None = None,
) -> list[list[Image.Image]]:
    """The images of each request, from one pipeline call over all of them (they must share a batch key).

    Every image keeps its own prompt, negative prompt and seeded generator, so a request's images equal what it gets
    alone, within floating-point tolerance. When `on_step` returns True the denoising loop stops at that step
    boundary (diffusers' interrupt flag); the images returned then are not meant to be used.
    """
    first = requests[0]
    if any(batch_key(request) != batch_key(first) for request in requests):
        raise ValueError("requests of one batch must share model, size, steps, sampler and guidance")
    pipeline.scheduler = build_scheduler(first.sampler, base_scheduler_config)
    prompts = [r.prompt for r in requests for _ in range(r.num_images)]
    negatives = [r.negative_prompt for r in requests for _ in range(r.num_images)]
    seeds = [seed for r in requests for seed in r.image_seeds()]

    def step_end(pipe: DiffusionPipeline, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        if on_step is not None and on_step(step_index + 1, pipe.num_timesteps, callback_kwargs["latents"]):
            pipe._interrupt = True  # the one place a private attribute is touched: diffusers' documented stop
        return callback_kwargs

    with torch.inference_mode():
        output = pipeline(
            prompt=prompts,
            negative_prompt=negatives if any(negatives) else None,
            width=first.width,
            height=first.height,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            num_images_per_prompt=1,
            generator=seeded_generators(seeds),
            output_type="pil",
            callback_on_step_end=step_end,
        )
    images = list(output.images)
    return [images[part] for part in split_counts(requests)]


def generate_images(
    pipeline: DiffusionPipeline,
    base_scheduler_config: dict[str, Any],
    request: GenerateRequest,
    on_step: StepHook | None = None,
) -> list[Image.Image]:
    """The images of one request (a batch of one)."""
    return generate_batch(pipeline, base_scheduler_config, [request], on_step)[0]
