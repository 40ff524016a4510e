"""What each model family does its own way, one small adapter per family, registered in one table.

Adding a family means one adapter class and one line in `FAMILY_ADAPTERS`; the loading, preview and prompt code asks
the adapter instead of branching on the family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from core.families import ModelFamily


class FamilyAdapter:
    """The base adapter: what a pipeline of no known family gets (previews stretch the first three latent channels)."""

    # Loads a single-file checkpoint of the family (it has no model_index.json to name its class); a loaded pipeline
    # of this class belongs to the family. The base matches no family and loads no single file.
    pipeline_class: ClassVar[type[Any]] = DiffusionPipeline
    # Approximate linear map from the latent channels to RGB in [-1, 1] for step previews; None: no known map.
    latent_rgb: ClassVar[torch.Tensor | None] = None

    def chunks_long_prompts(self, pipeline: DiffusionPipeline) -> bool:
        """Whether prompts past the text encoder's window may be read in chunks (one CLIP encoder, no pooled
        embeddings: chunks cannot give those)."""
        return getattr(pipeline, "tokenizer", None) is not None and getattr(pipeline, "tokenizer_2", None) is None


class StableDiffusionAdapter(FamilyAdapter):
    """Stable Diffusion 1.x and 2.x: one CLIP text encoder, 4-channel latents."""

    pipeline_class = StableDiffusionPipeline
    # Fitted on decoded images by the community (the projections ComfyUI and AUTOMATIC1111 use for fast previews).
    latent_rgb = torch.tensor(
        [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
    )


class StableDiffusionXLAdapter(FamilyAdapter):
    """SDXL and SDXL-Turbo: two text encoders with pooled embeddings, their own VAE scaling."""

    pipeline_class = StableDiffusionXLPipeline
    latent_rgb = torch.tensor(
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]
    )

    def chunks_long_prompts(self, pipeline: DiffusionPipeline) -> bool:
        """Never: the second encoder's pooled embeddings have no chunked form."""
        return False


# The one table: family name (`core.families.ModelFamily`) → adapter. Detection goes through it in this order.
FAMILY_ADAPTERS: dict[str, FamilyAdapter] = {
    ModelFamily.SD15: StableDiffusionAdapter(),
    ModelFamily.SD2: StableDiffusionAdapter(),
    ModelFamily.SDXL: StableDiffusionXLAdapter(),
    ModelFamily.TURBO: StableDiffusionXLAdapter(),
}
UNKNOWN_FAMILY = FamilyAdapter()

SDXL_SCALING_FACTOR = 0.13025


def family_adapter(family: str | None) -> FamilyAdapter:
    """The adapter of `family`; the base adapter for None (a pipeline of no known family)."""
    return UNKNOWN_FAMILY if family is None else FAMILY_ADAPTERS[family]


def family_by_vae(vae_scaling_factor: float, latent_channels: int) -> str | None:
    """The fallback guess from a VAE alone: `sdxl` by its scaling factor, `sd15` for other 4-channel latents."""
    if latent_channels != 4:
        return None
    return ModelFamily.SDXL if abs(vae_scaling_factor - SDXL_SCALING_FACTOR) < 1e-4 else ModelFamily.SD15


def detect_family(pipeline: DiffusionPipeline, declared: str | None = None) -> str | None:
    """The family of a loaded pipeline: `declared` when its adapter's class fits the pipeline, else the first family
    of the table whose class does, else a guess from the VAE; None when nothing fits."""
    if declared is not None and isinstance(pipeline, FAMILY_ADAPTERS[declared].pipeline_class):
        return declared
    for family, adapter in FAMILY_ADAPTERS.items():
        if isinstance(pipeline, adapter.pipeline_class):
            return family
    vae = getattr(pipeline, "vae", None)
    if vae is None:
        return None
    return family_by_vae(vae.config.scaling_factor, vae.config.latent_channels)
