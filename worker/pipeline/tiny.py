"""Models built in code: `tiny`, the Stable Diffusion architecture at toy size, and `tiny-flux`, `tiny-sd3` and
`tiny-qwen-image`, the flow-matching families' architectures at toy size; random weights from a fixed seed, built
offline in about a second (a few MB each).

Every real component is there (tokenizers and text encoders, UNet or transformer, VAE, the real scheduler config),
so a run exercises the same code as a real checkpoint; their images are noise. Each is saved as an ordinary diffusers
folder and then loaded by the same `from_pretrained` path as any local model (`IMAGEGEN_MODEL=<name>`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TINY_SEED = 0
TINY_VERSION = "tiny-v2"

# The scheduler config Stable Diffusion 1.5 ships (scheduler/scheduler_config.json), so every sampler is built
# from the same config as on the real model.
SD15_SCHEDULER_CONFIG: dict[str, object] = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for raw bytes (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def write_byte_level_clip_tokenizer(folder: Path) -> None:
    """Write vocab.json and merges.txt of a CLIP BPE tokenizer over single bytes: it encodes any text offline."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    vocab.update({symbol + "</w>": len(symbols) + i for i, symbol in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def assemble_sd_pipeline(vae: Any, text_encoder: Any, tokenizer: Any, unet: Any, scheduler: Any) -> Any:
    """A `StableDiffusionPipeline` of these components, without safety checker (models built in code have none)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_pipeline(folder: Path) -> None:
    """Build the tiny pipeline from code and `save_pretrained` it into `folder`."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = Path(scratch) / "tokenizer"
        write_byte_level_clip_tokenizer(tokenizer_dir)
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)

    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,  # native size 64x64 pixels
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    # Four blocks, so latents are 1/8 of the image side as in Stable Diffusion.
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64, 64],
        layers_per_block=1,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipe = assemble_sd_pipeline(vae, text_encoder, tokenizer, unet, PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG))
    pipe.save_pretrained(str(folder), safe_serialization=True)


def ensure_tiny_pipeline(cache_dir: Path) -> Path:
    """The tiny pipeline's folder under `cache_dir`, built on first use."""
    return ensure_tiny_model("tiny", cache_dir)


# ---------------------------------------------------------------------------------------------------------------------
# The flow-matching families at toy size: `tiny-flux`, `tiny-sd3`, `tiny-qwen-image`. Each keeps its family's real
# layout (component classes, 16 latent channels, 8x VAE, FLUX's and Qwen-Image's 2x2 packing, the real scheduler
# config) and shrinks only widths and depths; random weights from TINY_SEED, built offline (no tokenizer download).

# The scheduler configs the real models ship (scheduler/scheduler_config.json of black-forest-labs/FLUX.1-dev,
# stabilityai/stable-diffusion-3.5-medium and Qwen/Qwen-Image), so every flow sampler builds from the real config.
FLUX_SCHEDULER_CONFIG: dict[str, object] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
SD3_SCHEDULER_CONFIG: dict[str, object] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
}
QWEN_IMAGE_SCHEDULER_CONFIG: dict[str, object] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
# The VAE latent normalisation of the real models (vae/config.json): FLUX.1 and SD3 scale and shift their 16 channels.
FLUX_VAE_SCALING = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
SD3_VAE_SCALING = {"scaling_factor": 1.5305, "shift_factor": 0.0609}


def t5_tokenizer(max_length: int, words: tuple[str, ...] = ()) -> Any:
    """A T5 (unigram) tokenizer over single printable characters, built in code: it encodes any text offline;
    each of `words` (after a space or at the start) is one token (the demo-flow model's vocabulary)."""
    import string

    from transformers import T5Tokenizer

    chars = [c for c in string.printable if not c.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -2.0) for c in chars] + [("▁" + c, -1.5) for c in chars]
    # Scored above any split into characters, so the unigram model always takes the whole word.
    vocab += [("▁" + word, -1.0) for word in words if len(word) > 1]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def _t5_encoder(tokenizer: Any, width: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def _clip_tokenizer(scratch: Path) -> Any:
    from transformers import CLIPTokenizer

    folder = scratch / "clip-tokenizer"
    write_byte_level_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def _clip_config(tokenizer: Any, width: int, projection: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _flow_vae(**scaling: float) -> Any:
    """The FLUX/SD3 VAE layout: four blocks (8x), 16 latent channels, no quant convs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 8, 16, 16],
        layers_per_block=1,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=16,
        norm_num_groups=8,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **scaling,
    )


def build_tiny_flux_pipeline(folder: Path) -> None:
    """FLUX.1-dev at toy size (CLIP + T5, a guidance-distilled transformer over 2x2-packed 16-channel latents)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _clip_tokenizer(Path(scratch))
    tokenizer_2 = t5_tokenizer(512)
    torch.manual_seed(TINY_SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels x 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,  # like FLUX.1-dev: guidance is an input, not classifier-free
        axes_dims_rope=(4, 6, 6),
    )
    text_encoder = CLIPTextModel(_clip_config(tokenizer, 32, 32))
    text_encoder_2 = _t5_encoder(tokenizer_2, 32)
    vae = _flow_vae(**FLUX_VAE_SCALING)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)


def build_tiny_sd3_pipeline(folder: Path) -> None:
    """Stable Diffusion 3.5 at toy size (two CLIP encoders with projections + T5, MMDiT over 16-channel latents)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _clip_tokenizer(Path(scratch))
    tokenizer_3 = t5_tokenizer(256)
    torch.manual_seed(TINY_SEED)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,  # the T5 width; the two CLIP widths (16 + 16) are padded up to it
        caption_projection_dim=32,
        pooled_projection_dim=32,  # the two CLIP projections (16 + 16)
        out_channels=16,
        pos_embed_max_size=32,
        dual_attention_layers=(0,),  # like SD3.5 medium
        qk_norm="rms_norm",
    )
    text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer, 16, 16))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer, 16, 16))
    text_encoder_3 = _t5_encoder(tokenizer_3, 32)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER_CONFIG),
        vae=_flow_vae(**SD3_VAE_SCALING),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)


QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _qwen_tokenizer() -> Any:
    """A Qwen2 byte-level BPE tokenizer over single bytes plus the chat-template tokens Qwen-Image's prompt uses."""
    from transformers import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    return tokenizer


def build_tiny_qwen_image_pipeline(folder: Path) -> None:
    """Qwen-Image at toy size (a Qwen2.5-VL text encoder, MMDiT over 2x2-packed 16-channel latents, the causal
    Wan-style VAE)."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _qwen_tokenizer()
    torch.manual_seed(TINY_SEED)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,  # 16 latent channels x 2x2 packing
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    vocab = len(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": tokenizer.eos_token_id,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16,
        vocab_size=vocab,
        vision_start_token_id=vocab,
        vision_end_token_id=vocab + 1,
        vision_token_id=vocab + 2,
        image_token_id=vocab + 3,
        video_token_id=vocab + 4,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(QWEN_IMAGE_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)


# Each model built in code: name (`IMAGEGEN_MODEL`) → (cache folder name, builder). Bump a version when its build
# changes, so caches rebuild.
TINY_MODELS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "tiny": (TINY_VERSION, build_tiny_pipeline),
    "tiny-flux": ("tiny-flux-v1", build_tiny_flux_pipeline),
    "tiny-sd3": ("tiny-sd3-v1", build_tiny_sd3_pipeline),
    "tiny-qwen-image": ("tiny-qwen-image-v1", build_tiny_qwen_image_pipeline),
}


def ensure_tiny_model(name: str, cache_dir: Path) -> Path:
    """The folder of the model built in code called `name` under `cache_dir`, built on first use (atomically, so
    racing workers agree)."""
    version, build = TINY_MODELS[name]
    target = cache_dir / version
    if (target / "model_index.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=cache_dir))
    try:
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
