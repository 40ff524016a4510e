"""LoRA files for tests: a rank-4 adapter with random weights on the tiny model's attention projections, saved in the
format diffusers' `save_lora_weights` writes (what a real LoRA file for a diffusers pipeline holds)."""

from __future__ import annotations

from pathlib import Path

import torch


def write_random_lora(source: str, folder: Path, name: str, seed: int = 0) -> Path:
    """Train nothing: draw an adapter for the UNet of the pipeline at `source` and save it as `<name>.safetensors`."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")  # its own copy, not a resident pipeline
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=get_peft_model_state_dict(unet), weight_name=f"{name}.safetensors"
    )
    return folder / f"{name}.safetensors"
