"""LoRA files for tests: a rank-4 adapter with random weights on a tiny model's attention projections (the UNet of the
SD line, the transformer of FLUX, SD3 and Qwen-Image), saved in the format diffusers' `save_lora_weights` writes (what
a real LoRA file for a diffusers pipeline holds; diffusers' own LoRA tests make theirs the same way)."""

from __future__ import annotations

from pathlib import Path

import torch

# The attention projections every LoRA trainer targets (diffusers' training scripts and LoRA tests), in the UNet's and
# in each transformer's attention blocks alike.
ATTENTION_PROJECTIONS = ["to_q", "to_k", "to_v", "to_out.0"]


def write_random_lora(source: str, folder: Path, name: str, seed: int = 0) -> Path:
    """Train nothing: draw an adapter for the UNet of the pipeline at `source` and save it as `<name>.safetensors`."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")  # its own copy, not a resident pipeline
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=ATTENTION_PROJECTIONS))
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=get_peft_model_state_dict(unet), weight_name=f"{name}.safetensors"
    )
    return folder / f"{name}.safetensors"


def write_random_transformer_lora(source: str, folder: Path, name: str, seed: int = 0, alpha: float = 16.0) -> Path:
    """Draw an adapter for the transformer of the flow-family pipeline at `source` (FLUX, SD3, Qwen-Image) and save it
    as `<name>.safetensors` through that pipeline class's own `save_lora_weights`: keys `transformer.<module>.lora_A
    .weight` (the format its `load_lora_weights` reads) and the adapter's config in the file's metadata, so the
    loader applies `alpha` (rank 4; at alpha 16 the tiny models' pictures change by tens of levels)."""
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    index = diffusers.DiffusionPipeline.load_config(source)  # model_index.json: the classes to build
    pipeline_class = getattr(diffusers, index["_class_name"])
    transformer_class = getattr(diffusers, index["transformer"][1])
    torch.manual_seed(seed)
    transformer = transformer_class.from_pretrained(source, subfolder="transformer")
    config = LoraConfig(r=4, lora_alpha=alpha, init_lora_weights=False, target_modules=ATTENTION_PROJECTIONS)
    transformer.add_adapter(config)
    folder.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(
        str(folder),
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
        weight_name=f"{name}.safetensors",
    )
    return folder / f"{name}.safetensors"
