"""The committed demo model on its own: plain diffusers loads it, and an empty prompt spreads over the palette.
(Adherence, negative prompts and img2img are checked through the running service: tests/e2e/test_demo_model.py.)
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from tests.demo_colours import picture_colours
from worker.pipeline.loading import DEMO_MODEL_DIR

pytestmark = pytest.mark.skipif(
    not (DEMO_MODEL_DIR / "model_index.json").exists(), reason="demo weights not trained into the package"
)


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(str(DEMO_MODEL_DIR))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _colours(images) -> list[tuple[str, str | None]]:
    return [picture_colours(np.asarray(image)) for image in images]


def test_loads_with_plain_diffusers(pipe: StableDiffusionPipeline) -> None:
    assert pipe.vae_scale_factor == 8
    image = pipe(
        "a red circle on a blue background",
        num_inference_steps=10,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        height=64,
        width=64,
    ).images[0]
    assert image.size == (64, 64)


def test_empty_prompt_spreads_over_the_palette(pipe: StableDiffusionPipeline) -> None:
    images = pipe(
        [""] * 16,
        num_inference_steps=20,
        guidance_scale=1.0,
        height=64,
        width=64,
        generator=[torch.Generator().manual_seed(500 + i) for i in range(16)],
    ).images
    backgrounds = Counter(bg for bg, _ in _colours(images))
    assert backgrounds.most_common(1)[0][1] <= 8, backgrounds
