"""Cheap previews from latents: a fixed linear latent→RGB projection per model family, never a VAE decode.

Cost: one (4 → 3) projection over the latent grid (1/8 of the image side) and a small WebP encode. Measured on a
2-core CPU for a 512x512 job (64x64 latents): about 1 ms per preview (bench/preview_cost.py).
"""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from core.events import PreviewEvent

# Approximate linear maps from the 4 latent channels to RGB in [-1, 1], fitted on decoded images by the community
# (the same projections ComfyUI and AUTOMATIC1111 use for their fast previews).
LATENT_RGB = {
    "sd15": torch.tensor(
        [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
    ),
    "sdxl": torch.tensor(
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]
    ),
}
SDXL_SCALING_FACTOR = 0.13025


def latent_family(vae_scaling_factor: float, latent_channels: int) -> str | None:
    """Which projection fits a VAE: `sdxl` by its scaling factor, `sd15` for other 4-channel latents."""
    if latent_channels != 4:
        return None
    return "sdxl" if abs(vae_scaling_factor - SDXL_SCALING_FACTOR) < 1e-4 else "sd15"


def latents_to_image(latents: torch.Tensor, family: str | None) -> Image.Image:
    """An RGB image of the latents of a batch, images side by side, at latent resolution."""
    latents = latents.detach().float().cpu()  # (n, c, h, w)
    if family is not None:
        rgb = torch.einsum("nchw,cr->nrhw", latents, LATENT_RGB[family])
    else:  # unknown family: the first three channels, each stretched to its own range
        rgb = latents[:, :3]
        low = rgb.amin(dim=(0, 2, 3), keepdim=True)
        high = rgb.amax(dim=(0, 2, 3), keepdim=True)
        rgb = (rgb - low) / (high - low).clamp_min(1e-6) * 2 - 1
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (n, 3, h, w)
    row = torch.cat(list(pixels), dim=2)  # (3, h, n*w)
    return Image.fromarray(row.permute(1, 2, 0).numpy(), mode="RGB")


def preview_event(latents: torch.Tensor, family: str | None, step: int) -> PreviewEvent:
    """The preview of `latents` at `step`, as a WebP event."""
    image = latents_to_image(latents, family)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=70)
    return PreviewEvent(
        step=step,
        content_type="image/webp",
        width=image.width,
        height=image.height,
        data=base64.b64encode(buffer.getvalue()).decode("ascii"),
    )
