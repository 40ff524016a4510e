"""The optional safety checker: diffusers' `StableDiffusionSafetyChecker`, run by the pipeline after decoding.

Off unless the model's entry (or `IMAGEGEN_SAFETY_CHECKER`) turns it on; when off, a checker shipped inside a model
folder is not loaded either, so no image is blacked out without the job saying so. When on, the model's own checker is
used, else one is loaded from `safety_checker_source` (a hub id or a local folder holding the checker and its
`CLIPImageProcessor`). diffusers replaces a flagged image with a black one; the job marks it `content_filtered`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from diffusers import DiffusionPipeline

log = logging.getLogger(__name__)

# PIL image info key the generation step sets on each image it returns when a checker ran.
FILTERED_INFO_KEY = "imagegen_content_filtered"


def loading_options(enabled: bool) -> dict[str, Any]:
    """`from_pretrained` arguments: leave a model's checker out unless the checker is on."""
    return {} if enabled else {"safety_checker": None, "requires_safety_checker": False}


def attach_safety_checker(pipeline: DiffusionPipeline, source: str, device: torch.device, dtype: torch.dtype) -> None:
    """Make sure the pipeline runs a safety checker; load one from `source` when the model has none."""
    if "safety_checker" not in pipeline.components:
        raise ValueError(f"{type(pipeline).__name__} has no safety checker slot; turn safety_checker off for it")
    if pipeline.components.get("safety_checker") is not None:
        return
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    log.info("loading the safety checker from %s", source)
    checker = StableDiffusionSafetyChecker.from_pretrained(source, torch_dtype=dtype).to(device)
    pipeline.register_modules(safety_checker=checker, feature_extractor=CLIPImageProcessor.from_pretrained(source))
    pipeline.register_to_config(requires_safety_checker=True)
