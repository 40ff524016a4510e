"""Which queued jobs may share one pipeline call: pure logic, free of Redis and torch, so it is unit-tested directly.

Jobs are compatible when everything the denoising loop shares is equal: model, mode, size, steps, sampler, guidance
(and true CFG's scale), strength and LoRA adapters. Prompts, negative prompts, seeds, input images, image counts,
output formats and previews may differ per job. A job that asks to be `reproducible` runs alone: batched kernels
may round differently than a batch of one, and only a run alone is reproduced bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.schemas import GenerateRequest, GenerationMode, Sampler


@dataclass(frozen=True)
class BatchKey:
    """What jobs in one batch must share."""

    model: str | None
    width: int
    height: int
    steps: int
    sampler: Sampler
    guidance_scale: float
    true_cfg_scale: float | None = None
    mode: GenerationMode = GenerationMode.TXT2IMG
    strength: float | None = None
    loras: tuple[tuple[str, float], ...] = ()


def batch_key(request: GenerateRequest) -> BatchKey:
    """The batch key of a request."""
    return BatchKey(
        model=request.model,
        width=request.width,
        height=request.height,
        steps=request.steps,
        sampler=request.sampler,
        guidance_scale=request.guidance_scale,
        true_cfg_scale=request.true_cfg_scale,
        mode=request.mode,
        strength=None if request.mode is GenerationMode.TXT2IMG else request.strength,
        loras=tuple(sorted((lora.name, lora.scale) for lora in request.loras)),
    )


def select_batch(
    first: GenerateRequest,
    candidates: Sequence[tuple[str, GenerateRequest]],
    *,
    max_jobs: int,
    max_images: int,
) -> list[str]:
    """Ids of the candidates (in queue order) to run with `first`: compatible ones, while the batch stays within
    `max_jobs` jobs and `max_images` images. A candidate that does not fit is skipped, not a stop: a later, smaller
    one may still fit. A `reproducible` job takes no mates and is nobody's mate.
    """
    if first.reproducible:
        return []
    key = batch_key(first)
    chosen: list[str] = []
    images = first.num_images
    for job_id, request in candidates:
        if 1 + len(chosen) >= max_jobs:
            break
        if request.reproducible:
            continue
        if batch_key(request) == key and images + request.num_images <= max_images:
            chosen.append(job_id)
            images += request.num_images
    return chosen


def split_counts(requests: Sequence[GenerateRequest]) -> list[slice]:
    """The slice of the batch's images (and latents) that belongs to each request, in order."""
    slices, start = [], 0
    for request in requests:
        slices.append(slice(start, start + request.num_images))
        start += request.num_images
    return slices
