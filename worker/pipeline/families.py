"""What each model family does its own way, one small adapter per family, registered in one table.

Adding a family means one adapter class and one line in `FAMILY_ADAPTERS`; the loading, preview and prompt code asks
the adapter instead of branching on the family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from diffusers import (
    DiffusionPipeline,
    FluxPipeline,
    QwenImagePipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.loaders import (
    FluxLoraLoaderMixin,
    QwenImageLoraLoaderMixin,
    SD3LoraLoaderMixin,
    StableDiffusionLoraLoaderMixin,
    StableDiffusionXLLoraLoaderMixin,
)
from diffusers.loaders.lora_base import LoraBaseMixin

from core.families import ModelFamily
from core.schemas import GenerateRequest


class FamilyAdapter:
    """The base adapter: what a pipeline of no known family gets (previews stretch the first three latent channels)."""

    # Loads a single-file checkpoint of the family (it has no model_index.json to name its class); a loaded pipeline
    # of this class belongs to the family. The base matches no family and loads no single file.
    pipeline_class: ClassVar[type[Any]] = DiffusionPipeline
    # Approximate linear map from the latent channels to RGB in [-1, 1] for step previews; None: no known map.
    latent_rgb: ClassVar[torch.Tensor | None] = None
    # Added to the projection's RGB (in [-1, 1]); None: nothing.
    latent_rgb_bias: ClassVar[torch.Tensor | None] = None
    # The weights' dtype on CUDA when the settings name none (the CPU always runs float32).
    cuda_dtype: ClassVar[torch.dtype] = torch.float16
    # Whether the text encoders include T5 (or another long-context encoder) that takes `max_sequence_length`.
    max_sequence_length: ClassVar[int | None] = None
    # Whether img2img takes the request's width and height (the flow families' img2img pipelines otherwise make
    # their native size; the SD line's take the size of the image, already fitted to the request's).
    img2img_takes_size: ClassVar[bool] = False
    # The diffusers loader (a mixin of the family's pipeline classes) whose `load_lora_weights`, `set_adapters` and
    # `disable_lora` the worker's LoRA code calls; None: the family takes no LoRA, and a job asking for one is refused
    # at admission. The base: whichever loader the pipeline's class has (refused where it has none).
    lora_loader: ClassVar[type[Any] | None] = LoraBaseMixin

    def chunks_long_prompts(self, pipeline: DiffusionPipeline) -> bool:
        """Whether prompts past the text encoder's window may be read in chunks (one CLIP encoder, no pooled
        embeddings: chunks cannot give those)."""
        return getattr(pipeline, "tokenizer", None) is not None and getattr(pipeline, "tokenizer_2", None) is None

    def guidance_arguments(self, pipeline: DiffusionPipeline, request: GenerateRequest) -> dict[str, Any]:
        """The guidance arguments of the pipeline call (classifier-free guidance at `guidance_scale`)."""
        return {"guidance_scale": request.guidance_scale}

    def takes_negative_prompts(self, request: GenerateRequest) -> bool:
        """Whether the call takes the batch's negative prompts (classifier-free guidance always does)."""
        return True

    def unpack_latents(self, pipeline: DiffusionPipeline, latents: torch.Tensor, width: int, height: int) -> Any:
        """The step callback's latents as (images, channels, height, width) for previews (a view, no copy)."""
        return latents


class StableDiffusionAdapter(FamilyAdapter):
    """Stable Diffusion 1.x and 2.x: one CLIP text encoder, 4-channel latents."""

    pipeline_class = StableDiffusionPipeline
    lora_loader = StableDiffusionLoraLoaderMixin
    # Fitted on decoded images by the community (the projections ComfyUI and AUTOMATIC1111 use for fast previews).
    latent_rgb = torch.tensor(
        [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
    )


class StableDiffusionXLAdapter(FamilyAdapter):
    """SDXL and SDXL-Turbo: two text encoders with pooled embeddings, their own VAE scaling."""

    pipeline_class = StableDiffusionXLPipeline
    lora_loader = StableDiffusionXLLoraLoaderMixin
    latent_rgb = torch.tensor(
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]
    )

    def chunks_long_prompts(self, pipeline: DiffusionPipeline) -> bool:
        """Never: the second encoder's pooled embeddings have no chunked form."""
        return False


# Fitted on decoded images by the ComfyUI project (comfy/latent_formats.py, classes SD3, Flux and Wan21, whose
# format Qwen-Image's VAE shares); they apply to latents as the denoiser sees them (scaled and shifted), as diffusers'
# step callbacks pass them. Rows: latent channels; columns: R, G, B.
SD3_LATENT_RGB = torch.tensor(
    [
        [-0.0922, -0.0175, 0.0749],
        [0.0311, 0.0633, 0.0954],
        [0.1994, 0.0927, 0.0458],
        [0.0856, 0.0339, 0.0902],
        [0.0587, 0.0272, -0.0496],
        [-0.0006, 0.1104, 0.0309],
        [0.0978, 0.0306, 0.0427],
        [-0.0042, 0.1038, 0.1358],
        [-0.0194, 0.0020, 0.0669],
        [-0.0488, 0.0130, -0.0268],
        [0.0922, 0.0988, 0.0951],
        [-0.0278, 0.0524, -0.0542],
        [0.0332, 0.0456, 0.0895],
        [-0.0069, -0.0030, -0.0810],
        [-0.0596, -0.0465, -0.0293],
        [-0.1448, -0.1463, -0.1189],
    ]
)
SD3_LATENT_RGB_BIAS = torch.tensor([0.2394, 0.2135, 0.1925])
FLUX_LATENT_RGB = torch.tensor(
    [
        [-0.0346, 0.0244, 0.0681],
        [0.0034, 0.0210, 0.0687],
        [0.0275, -0.0668, -0.0433],
        [-0.0174, 0.0160, 0.0617],
        [0.0859, 0.0721, 0.0329],
        [0.0004, 0.0383, 0.0115],
        [0.0405, 0.0861, 0.0915],
        [-0.0236, -0.0185, -0.0259],
        [-0.0245, 0.0250, 0.1180],
        [0.1008, 0.0755, -0.0421],
        [-0.0515, 0.0201, 0.0011],
        [0.0428, -0.0012, -0.0036],
        [0.0817, 0.0765, 0.0749],
        [-0.1264, -0.0522, -0.1103],
        [-0.0280, -0.0881, -0.0499],
        [-0.1262, -0.0982, -0.0778],
    ]
)
FLUX_LATENT_RGB_BIAS = torch.tensor([-0.0329, -0.0718, -0.0851])
QWEN_IMAGE_LATENT_RGB = torch.tensor(
    [
        [-0.1299, -0.1692, 0.2932],
        [0.0671, 0.0406, 0.0442],
        [0.3568, 0.2548, 0.1747],
        [0.0372, 0.2344, 0.1420],
        [0.0313, 0.0189, -0.0328],
        [0.0296, -0.0956, -0.0665],
        [-0.3477, -0.4059, -0.2925],
        [0.0166, 0.1902, 0.1975],
        [-0.0412, 0.0267, -0.1364],
        [-0.1293, 0.0740, 0.1636],
        [0.0680, 0.3019, 0.1128],
        [0.0032, 0.0581, 0.0639],
        [-0.1251, 0.0927, 0.1699],
        [0.0060, -0.0633, 0.0005],
        [0.3477, 0.2275, 0.2950],
        [0.1984, 0.0913, 0.1861],
    ]
)
QWEN_IMAGE_LATENT_RGB_BIAS = torch.tensor([-0.1835, -0.0868, -0.3360])


def unpack_2x2(latents: torch.Tensor, latent_width: int, latent_height: int) -> torch.Tensor:
    """FLUX's and Qwen-Image's packed latents (images, (h/2)*(w/2), channels*4) as (images, channels, h, w): the
    inverse of their pipelines' `_pack_latents` (a view where the layout allows)."""
    images, _, packed = latents.shape
    channels = packed // 4
    grid = latents.view(images, latent_height // 2, latent_width // 2, channels, 2, 2)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(images, channels, latent_height, latent_width)


class FlowAdapter(FamilyAdapter):
    """What the rectified-flow families (FLUX, SD3, Qwen-Image) share: bfloat16 on CUDA (T5 overflows in float16),
    a long-context text encoder read up to `max_sequence_length` (never in CLIP chunks), 16-channel latents."""

    cuda_dtype = torch.bfloat16
    max_sequence_length = 512
    img2img_takes_size = True

    def chunks_long_prompts(self, pipeline: DiffusionPipeline) -> bool:
        """Never: the T5 (or Qwen2.5-VL) encoder reads long prompts whole."""
        return False

    # The pipeline attribute holding the tokenizer of the long-context encoder.
    long_tokenizer_name: ClassVar[str] = "tokenizer"

    def sequence_length(self, pipeline: DiffusionPipeline) -> int:
        """The `max_sequence_length` the call passes (the family's)."""
        assert self.max_sequence_length is not None
        return self.max_sequence_length

    def long_tokenizer(self, pipeline: DiffusionPipeline) -> Any:
        """The tokenizer of the encoder that reads up to `max_sequence_length` tokens."""
        return getattr(pipeline, self.long_tokenizer_name)


class Sd3Adapter(FlowAdapter):
    """Stable Diffusion 3 / 3.5: two CLIP encoders and T5, MMDiT over 16-channel latents, classifier-free guidance."""

    pipeline_class = StableDiffusion3Pipeline
    lora_loader = SD3LoraLoaderMixin
    long_tokenizer_name = "tokenizer_3"
    latent_rgb = SD3_LATENT_RGB
    latent_rgb_bias = SD3_LATENT_RGB_BIAS
    # The pipeline's ceiling (its default is 256): one fixed length per model, so a prompt's embeddings (and pixels)
    # never depend on its batch mates' lengths.
    max_sequence_length = 512


class TrueCfgAdapter(FlowAdapter):
    """FLUX and Qwen-Image: a negative prompt works only through true classifier-free guidance (`true_cfg_scale` >
    1, a second transformer pass per step). With it on, every image of the batch gets a negative prompt (empty where
    its request gave none), so an image's pixels do not depend on its batch mates."""

    def takes_negative_prompts(self, request: GenerateRequest) -> bool:
        """Only with true CFG on."""
        return (request.true_cfg_scale or 1.0) > 1.0

    def guidance_arguments(self, pipeline: DiffusionPipeline, request: GenerateRequest) -> dict[str, Any]:
        """`true_cfg_scale` (1: off), and `guidance_scale` for transformers that take guidance as an input."""
        arguments: dict[str, Any] = {"true_cfg_scale": request.true_cfg_scale or 1.0}
        transformer = getattr(pipeline, "transformer", None)
        if transformer is not None and transformer.config.get("guidance_embeds", False):
            arguments["guidance_scale"] = request.guidance_scale
        return arguments

    def unpack_latents(self, pipeline: DiffusionPipeline, latents: torch.Tensor, width: int, height: int) -> Any:
        """Packed 2x2 (images, tokens, channels*4) → (images, channels, h, w)."""
        if latents.ndim != 3:
            return latents
        factor = int(pipeline.vae_scale_factor)
        return unpack_2x2(latents, 2 * (width // (factor * 2)), 2 * (height // (factor * 2)))


class FluxAdapter(TrueCfgAdapter):
    """FLUX.1 dev / schnell: CLIP (pooled) and T5, guidance-distilled transformer over packed 16-channel latents."""

    pipeline_class = FluxPipeline
    lora_loader = FluxLoraLoaderMixin
    long_tokenizer_name = "tokenizer_2"
    latent_rgb = FLUX_LATENT_RGB
    latent_rgb_bias = FLUX_LATENT_RGB_BIAS

    def sequence_length(self, pipeline: DiffusionPipeline) -> int:
        """512 (FluxPipeline's ceiling and default), or less where the T5 tokenizer's `model_max_length` says so:
        one fixed length per model, so a prompt's embeddings never depend on its batch mates' lengths."""
        tokenizer = getattr(pipeline, "tokenizer_2", None)
        window = getattr(tokenizer, "model_max_length", 512) if tokenizer is not None else 512
        return min(512, int(window))

    def guidance_arguments(self, pipeline: DiffusionPipeline, request: GenerateRequest) -> dict[str, Any]:
        """Always `guidance_scale` too: FluxPipeline reads it when the transformer embeds guidance (dev), and
        ignores it otherwise (schnell)."""
        return {**super().guidance_arguments(pipeline, request), "guidance_scale": request.guidance_scale}


class QwenImageAdapter(TrueCfgAdapter):
    """Qwen-Image: a Qwen2.5-VL text encoder, MMDiT over packed 16-channel latents of a Wan-style VAE."""

    pipeline_class = QwenImagePipeline
    lora_loader = QwenImageLoraLoaderMixin
    latent_rgb = QWEN_IMAGE_LATENT_RGB
    latent_rgb_bias = QWEN_IMAGE_LATENT_RGB_BIAS
    max_sequence_length = 1024


# The one table: family name (`core.families.ModelFamily`) → adapter. Detection goes through it in this order.
FAMILY_ADAPTERS: dict[str, FamilyAdapter] = {
    ModelFamily.SD15: StableDiffusionAdapter(),
    ModelFamily.SD2: StableDiffusionAdapter(),
    ModelFamily.SDXL: StableDiffusionXLAdapter(),
    ModelFamily.TURBO: StableDiffusionXLAdapter(),
    ModelFamily.FLUX: FluxAdapter(),
    ModelFamily.SD3: Sd3Adapter(),
    ModelFamily.QWEN_IMAGE: QwenImageAdapter(),
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


def family_by_class_name(class_name: str | None) -> str | None:
    """The family whose pipeline class is called `class_name` (a model_index.json's `_class_name`), if any."""
    for family, adapter in FAMILY_ADAPTERS.items():
        if adapter.pipeline_class.__name__ == class_name:
            return family
    return None


def pipeline_modes(pipeline: DiffusionPipeline) -> list[str]:
    """The modes (`core.schemas.GenerationMode` values) diffusers has a pipeline for over `pipeline`'s components:
    txt2img, and img2img / inpaint where AutoPipeline's maps hold a variant of its kind."""
    from diffusers.pipelines.auto_pipeline import (
        AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        AUTO_INPAINT_PIPELINES_MAPPING,
        AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
    )

    def kinds(mapping: Mapping[str, Any]) -> set[str]:
        return {kind for kind, cls in mapping.items() if cls.__name__ == type(pipeline).__name__}

    own = kinds(AUTO_TEXT2IMAGE_PIPELINES_MAPPING) | kinds(AUTO_IMAGE2IMAGE_PIPELINES_MAPPING)
    modes = ["txt2img"]
    if own & set(AUTO_IMAGE2IMAGE_PIPELINES_MAPPING):
        modes.append("img2img")
    if own & set(AUTO_INPAINT_PIPELINES_MAPPING):
        modes.append("inpaint")
    return modes
