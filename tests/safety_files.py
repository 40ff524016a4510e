"""A safety checker for tests: diffusers' `StableDiffusionSafetyChecker` class at a tiny size with random weights, its
concept thresholds set so that it flags every image (or none), saved with its `CLIPImageProcessor` as a folder, the
layout of CompVis/stable-diffusion-safety-checker. The real checker's weights cannot be downloaded here."""

from __future__ import annotations

from pathlib import Path

import torch


def write_test_safety_checker(folder: Path, *, flag_everything: bool) -> Path:
    """Save a checker that flags every image (`flag_everything`) or none into `folder`."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4},
        vision_config={**vision, "image_size": 32, "patch_size": 4},
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    # A concept scores (cosine similarity - threshold); any score > 0 flags the image. Cosines lie in [-1, 1].
    threshold = -2.0 if flag_everything else 2.0
    checker.concept_embeds_weights.data.fill_(threshold)
    checker.special_care_embeds_weights.data.fill_(threshold)
    folder.mkdir(parents=True, exist_ok=True)
    checker.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder
