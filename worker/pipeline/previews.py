"""Cheap previews from latents: a fixed linear latent→RGB projection per model family (its adapter in
`worker/pipeline/families.py` holds it), never a VAE decode.

Cost: one (4 → 3, or 16 → 3 for the flow families) projection over the latent grid (1/8 of the image side) and a
small WebP encode. Measured on a 2-core CPU for a 512x512 job (64x64 latents): about 1 ms per preview
(bench/preview_cost.py).
"""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from core.events import PreviewEvent


def latents_to_image(
    latents: torch.Tensor, projection: torch.Tensor | None, bias: torch.Tensor | None = None
) -> Image.Image:
    """An RGB image of the latents of a batch, images side by side, at latent resolution; `projection` maps the
    latent channels to RGB in [-1, 1], plus `bias` where given (None: the first three channels, each stretched to its
    own range). Latents come as (images, channels, height, width): the families' adapters unpack FLUX's and
    Qwen-Image's 2x2-packed ones before."""
    latents = latents.detach().float().cpu()  # (n, c, h, w)
    if projection is not None:
        rgb = torch.einsum("nchw,cr->nrhw", latents, projection)
        if bias is not None:
            rgb = rgb + bias.view(1, 3, 1, 1)
    else:
        rgb = latents[:, :3]
        low = rgb.amin(dim=(0, 2, 3), keepdim=True)
        high = rgb.amax(dim=(0, 2, 3), keepdim=True)
        rgb = (rgb - low) / (high - low).clamp_min(1e-6) * 2 - 1
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (n, 3, h, w)
    row = torch.cat(list(pixels), dim=2)  # (3, h, n*w)
    return Image.fromarray(row.permute(1, 2, 0).numpy(), mode="RGB")


def preview_event(
    latents: torch.Tensor, projection: torch.Tensor | None, step: int, bias: torch.Tensor | None = None
) -> PreviewEvent:
    """The preview of `latents` at `step`, as a WebP event."""
    image = latents_to_image(latents, projection, bias)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=70)
    return PreviewEvent(
        step=step,
        content_type="image/webp",
        width=image.width,
        height=image.height,
        data=base64.b64encode(buffer.getvalue()).decode("ascii"),
    )
