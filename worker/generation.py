"""Running one request through the resident pipeline: sampler, per-image seeds, the step hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from core.schemas import GenerateRequest
from worker.samplers import build_scheduler

# Called after each denoising iteration with (iterations done, total, latents); returns True to stop the run.
StepHook = Callable[[int, int, torch.Tensor], bool]


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image. CPU generators give the same initial noise on every device for a seed."""
    return [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]


def generate_images(
    pipeline: DiffusionPipeline,
    base_scheduler_config: dict[str, Any],
    request: GenerateRequest,
    on_step: StepHook | None = None,
) -> list[Image.Image]:
    """Generate the request's images with its sampler and seeds, exactly as a plain diffusers call would.

    When `on_step` returns True the denoising loop stops at that step boundary (diffusers' interrupt flag); the
    images returned then are not meant to be used.
    """
    pipeline.scheduler = build_scheduler(request.sampler, base_scheduler_config)

    def step_end(pipe: DiffusionPipeline, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        if on_step is not None and on_step(step_index + 1, pipe.num_timesteps, callback_kwargs["latents"]):
            pipe._interrupt = True  # the one place a private attribute is touched: diffusers' documented stop
        return callback_kwargs

    with torch.inference_mode():
        output = pipeline(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or None,
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            num_images_per_prompt=request.num_images,
            generator=seeded_generators(request.image_seeds()),
            output_type="pil",
            callback_on_step_end=step_end,
        )
    return list(output.images)
