"""Latent previews: a fixed projection, the right size, and a decodable image."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from worker.pipeline.families import FAMILY_ADAPTERS
from worker.pipeline.previews import latents_to_image, preview_event

SD15_RGB = FAMILY_ADAPTERS["sd15"].latent_rgb


def test_projection_is_the_family_matrix() -> None:
    # A latent that is 1 in channel 0 only maps to the first row of the matrix, scaled from [-1, 1] to [0, 255].
    assert SD15_RGB is not None
    latents = torch.zeros(1, 4, 2, 2)
    latents[:, 0] = 1.0
    pixel = latents_to_image(latents, SD15_RGB).getpixel((0, 0))
    expected = tuple(round((float(v) + 1) * 127.5) for v in SD15_RGB[0])
    assert pixel == expected


def test_batch_is_laid_side_by_side_at_latent_size() -> None:
    image = latents_to_image(torch.randn(3, 4, 8, 6), SD15_RGB)
    assert image.size == (18, 8)
    unknown = latents_to_image(torch.randn(1, 16, 8, 8), None)
    assert unknown.size == (8, 8)


def test_preview_event_decodes_as_webp() -> None:
    event = preview_event(torch.randn(2, 4, 8, 8), SD15_RGB, step=5)
    assert event.step == 5
    assert event.content_type == "image/webp"
    image = Image.open(io.BytesIO(base64.b64decode(event.data)))
    assert image.format == "WEBP"
    assert image.size == (event.width, event.height) == (16, 8)
