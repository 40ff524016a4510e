"""Pipeline speed of the families people serve, at their real sizes: SD 1.5, SDXL and FLUX.1-dev built with random
weights from their published configs (no download), plain diffusers against the worker's path in the same process,
images/s at several batch sizes, bfloat16 on CUDA, with and without `torch.compile`, and the share of the device's
peak the denoiser reaches (MFU), from a FLOP count of one denoiser call.

    python -m bench.pipeline_families --device cuda --model flux-dev --batches 1,4,8 [--compile] --json out.json
    python -m bench.pipeline_families --model flux-dev --count-only      # parameters and FLOP floor, no weights made
    python -m bench.pipeline_families --device cpu --model tiny-flux --size 64 --steps 2 --batches 1,2 --repeats 1

`--model` is one of `sd15`, `sdxl`, `flux-dev` (real sizes: for a GPU; the random weights are made on the device in
the run's dtype, then the same pipeline object serves both paths) or `tiny`, `tiny-sd3`, `tiny-flux` (toy sizes, so
the script runs in CI on a CPU). The baseline is a plain pipeline call with the model's own scheduler; the worker's
path then applies the worker's runtime options (`worker/pipeline/acceleration.py`: SDPA, channels-last, compile) to
the same modules and runs its batched generation call (`worker/pipeline/generation.py`). Weights are random: images
are noise, speed is what is measured.

`--count-only` builds the model on PyTorch's meta device (shapes, no memory) and counts its parameters and the FLOP
of one denoiser call at `--size` with `torch.utils.flop_counter` (matmuls, convolutions and attention): the floor the
MFU figure is measured against. docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bench.common import median_seconds
from core.schemas import GenerateRequest
from core.settings import Settings
from worker.pipeline.acceleration import apply_runtime_options
from worker.pipeline.families import detect_family, family_adapter
from worker.pipeline.generation import generate_batch, seeded_generators
from worker.pipeline.tiny import TINY_MODELS, write_byte_level_clip_tokenizer

REAL_MODELS = ("sd15", "sdxl", "flux-dev")
TOY_MODELS = ("tiny", "tiny-sd3", "tiny-flux")


@contextmanager
def made_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Modules built inside are made on `device` in `dtype` (no float32 copy on the host first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def on_host() -> Iterator[None]:
    """Schedulers keep their tables on the host in float32, whatever the models are made on."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.device("cpu"):
            yield
    finally:
        torch.set_default_dtype(previous)


def _clip_tokenizer(scratch: Path) -> Any:
    from transformers import CLIPTokenizer

    write_byte_level_clip_tokenizer(scratch / "clip-tokenizer")
    return CLIPTokenizer.from_pretrained(str(scratch / "clip-tokenizer"), model_max_length=77)


def _clip(tokenizer: Any, width: int, layers: int, heads: int, projection: bool, act: str) -> Any:
    """CLIP-L (768 wide, 12 layers) or CLIP-G/bigG (1280, 32 layers) text encoder."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=width * 4,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        projection_dim=width,
        hidden_act=act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(latent_channels: int, **config: Any) -> Any:
    """The SD/SDXL/FLUX autoencoder (f = 8; 4 or 16 latent channels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **config,
    )


def build_sdxl(scratch: Path) -> Any:
    """SDXL base 1.0's architecture (UNet 2.6 B parameters, CLIP-L + CLIP-bigG), random weights."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = _clip_tokenizer(scratch)
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    with on_host():
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        )
    return StableDiffusionXLPipeline(
        vae=_vae(4, sample_size=1024, scaling_factor=0.13025),
        text_encoder=_clip(tokenizer, 768, 12, 12, projection=False, act="quick_gelu"),
        text_encoder_2=_clip(tokenizer, 1280, 32, 20, projection=True, act="gelu"),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def build_sd15(scratch: Path) -> Any:
    """Stable Diffusion 1.5's architecture (UNet 860 M parameters, CLIP-L), random weights."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    from worker.pipeline.tiny import SD15_SCHEDULER_CONFIG, assemble_sd_pipeline

    tokenizer = _clip_tokenizer(scratch)
    unet = UNet2DConditionModel(
        sample_size=64,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    with on_host():
        scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    return assemble_sd_pipeline(
        _vae(4, sample_size=512),
        _clip(tokenizer, 768, 12, 12, projection=False, act="quick_gelu"),
        tokenizer,
        unet,
        scheduler,
    )


def build_flux_dev(scratch: Path) -> Any:
    """FLUX.1-dev's architecture (transformer 11.9 B parameters: 19 double and 38 single blocks of 3072; CLIP-L and
    T5-XXL; the 16-channel VAE), random weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from worker.pipeline.tiny import t5_tokenizer

    tokenizer = _clip_tokenizer(scratch)
    tokenizer_2 = t5_tokenizer(512)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=24,
            num_heads=64,
            feed_forward_proj="gated-gelu",
            relative_attention_num_buckets=32,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=19,
        num_single_layers=38,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    )
    with on_host():
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
    vae = _vae(16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
               use_post_quant_conv=False)  # fmt: skip
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=_clip(tokenizer, 768, 12, 12, projection=False, act="quick_gelu"),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


BUILDERS: dict[str, Callable[[Path], Any]] = {"sd15": build_sd15, "sdxl": build_sdxl, "flux-dev": build_flux_dev}


def build(model: str, scratch: Path, device: torch.device, dtype: torch.dtype) -> Any:
    """The pipeline of `model` on `device` in `dtype`: a real size made in place, or a toy one built and loaded."""
    if model in BUILDERS:
        torch.manual_seed(0)
        with made_on(device, dtype):
            return BUILDERS[model](scratch)
    from diffusers import DiffusionPipeline

    version, builder = TINY_MODELS[model]
    builder(scratch / version)
    return DiffusionPipeline.from_pretrained(str(scratch / version), torch_dtype=dtype).to(device)


def denoiser(pipeline: Any) -> torch.nn.Module:
    """The UNet or transformer."""
    return pipeline.transformer if getattr(pipeline, "transformer", None) is not None else pipeline.unet


def count_denoiser_flop(model: str, size: int) -> tuple[int, float]:
    """Parameters of the denoiser and TFLOP of one denoiser call at `size`² for one image (one pass: classifier-free
    guidance doubles it; FLUX.1-dev's distilled guidance does not), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory() as scratch:
        pipeline = build(model, Path(scratch), torch.device("meta"), torch.bfloat16)
    net = denoiser(pipeline)
    parameters = sum(p.numel() for p in net.parameters())
    latent = size // 8
    with made_on(torch.device("meta"), torch.bfloat16):
        if model == "flux-dev":
            tokens, text = (latent // 2) ** 2, 512
            inputs: dict[str, Any] = {
                "hidden_states": torch.zeros(1, tokens, 64),
                "encoder_hidden_states": torch.zeros(1, text, 4096),
                "pooled_projections": torch.zeros(1, 768),
                "timestep": torch.zeros(1),
                "guidance": torch.zeros(1),
                "img_ids": torch.zeros(tokens, 3),
                "txt_ids": torch.zeros(text, 3),
            }
        else:
            cross = 2048 if model == "sdxl" else 768
            inputs = {
                "sample": torch.zeros(1, 4, latent, latent),
                "timestep": torch.zeros(1),
                "encoder_hidden_states": torch.zeros(1, 77, cross),
            }
            if model == "sdxl":
                inputs["added_cond_kwargs"] = {"text_embeds": torch.zeros(1, 1280), "time_ids": torch.zeros(1, 6)}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(**inputs)
    return parameters, counter.get_total_flops() / 1e12


def _request(model: str, size: int, steps: int) -> GenerateRequest:
    flow = model in ("flux-dev", "tiny-flux", "tiny-sd3")
    sampler = "flow_euler" if flow else "euler"
    guidance = 3.5 if model in ("flux-dev", "tiny-flux") else 7.0
    negative = "" if model in ("flux-dev", "tiny-flux") else "blurry"
    return GenerateRequest(
        prompt="a lighthouse at dusk",
        negative_prompt=negative,
        width=size,
        height=size,
        steps=steps,
        guidance_scale=guidance,
        sampler=sampler,
        seed=1,
    )


def measure_plain(pipeline: Any, request: GenerateRequest, repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of one image through a plain pipeline call (its own scheduler, no runtime options)."""
    arguments: dict[str, Any] = {
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance_scale,
    }
    if request.negative_prompt:
        arguments["negative_prompt"] = request.negative_prompt
    adapter = family_adapter(detect_family(pipeline))
    if adapter.max_sequence_length:  # the T5 window the worker reads (SD3's pipeline would pad to 256 by default)
        arguments["max_sequence_length"] = adapter.max_sequence_length
    pipeline.set_progress_bar_config(disable=True)

    def run() -> None:
        pipeline(**arguments, generator=seeded_generators([request.seed or 0]))

    return median_seconds(run, repeats, sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=(*REAL_MODELS, *TOY_MODELS), default="tiny-flux")
    parser.add_argument("--size", type=int, default=None, help="default: sd15 512, sdxl and flux-dev 1024, toys 64")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the worker's denoiser")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16/fp16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--count-only", action="store_true", help="parameters and FLOP per denoiser call, no run")
    parser.add_argument("--json")
    args = parser.parse_args()
    size = args.size or (512 if args.model == "sd15" else 64 if args.model in TOY_MODELS else 1024)

    if args.count_only:
        if args.model not in REAL_MODELS:
            parser.error(f"--count-only counts the real sizes: {', '.join(REAL_MODELS)}")
        parameters, tflop = count_denoiser_flop(args.model, size)
        print(f"{args.model}: denoiser {parameters / 1e9:.2f} B parameters; {tflop:.2f} TFLOP per call at {size}²")
        if args.json:
            Path(args.json).write_text(json.dumps({"model": args.model, "parameters": parameters, "tflop": tflop}))
        return

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dtype = (
        (torch.float16 if args.model in ("sd15", "tiny") else torch.bfloat16)
        if device.type == "cuda"
        else torch.float32
    )
    scratch = Path(tempfile.mkdtemp(prefix="imagegen-bench-"))
    pipeline = build(args.model, scratch, device, dtype)
    request = _request(args.model, size, args.steps)
    flop_per_image = None
    if args.model in REAL_MODELS:
        _, tflop = count_denoiser_flop(args.model, size)
        passes = 1 if args.model == "flux-dev" else 2  # distilled guidance: one pass; CFG: two
        flop_per_image = tflop * passes * args.steps

    # Baseline: a plain pipeline call, before the worker's options touch the modules.
    baseline = measure_plain(pipeline, request, args.repeats, sync)

    # The worker's path: its runtime options on the same modules, then its batched generation call.
    settings = Settings(model=args.model, device=str(device), compile=args.compile)
    applied = apply_runtime_options(pipeline, device, settings)
    config = dict(pipeline.scheduler.config)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        requests = [request.model_copy(update={"seed": 100 + i}) for i in range(batch)]
        seconds = median_seconds(
            lambda requests=requests: generate_batch(pipeline, config, requests), args.repeats, sync
        )
        mfu = (
            (batch * flop_per_image / seconds / args.peak_tflops) if flop_per_image and device.type == "cuda" else None
        )
        rows.append({"batch": batch, "seconds": seconds, "images_per_s": batch / seconds, "mfu": mfu})

    speedup = baseline / rows[0]["seconds"] if rows[0]["batch"] == 1 else None
    print(f"{args.model} {size}x{size}, {args.steps} steps, {device} {str(dtype).removeprefix('torch.')}; "
          f"worker options: {', '.join(applied) or 'none'}")  # fmt: skip
    if flop_per_image:
        print(
            f"denoiser floor: {flop_per_image:.1f} TFLOP per image ({args.steps} steps; VAE and text encoders not "
            "counted)"
        )
    print(f"{'path':<28}{'batch':>6}{'s/call':>10}{'images/s':>10}{'MFU':>8}")
    print(f"{'plain diffusers (baseline)':<28}{1:>6}{baseline:>10.3f}{1 / baseline:>10.2f}{'':>8}")
    for row in rows:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
        print(f"{'worker path':<28}{row['batch']:>6}{row['seconds']:>10.3f}{row['images_per_s']:>10.2f}{mfu:>8}")
    if speedup is not None:
        print(f"ratio: worker path at batch 1 is {speedup:.2f}x plain diffusers on {device}")
    if args.json:
        result = {
            "model": args.model,
            "device": str(device),
            "dtype": str(dtype),
            "size": size,
            "steps": args.steps,
            "compile": args.compile,
            "baseline_seconds": baseline,
            "speedup_batch_1": speedup,
            "flop_per_image_tflop": flop_per_image,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
