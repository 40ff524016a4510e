"""Cost of one step preview (latent→RGB projection + WebP) against a full VAE decode, measured in the same run.

The VAE is Stable Diffusion 1.5's architecture (AutoencoderKL, channels 128/256/512/512) with random weights, built
from its config in code: the decode cost depends on the architecture, not on the weights.

    python bench/preview_cost.py [--size 512] [--device cpu|cuda] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch
from diffusers import AutoencoderKL

from bench.common import median_seconds
from worker.pipeline.families import FAMILY_ADAPTERS
from worker.pipeline.previews import preview_event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=args.size,
    ).to(device=device, dtype=dtype)
    latents = torch.randn(1, 4, args.size // 8, args.size // 8, device=device, dtype=dtype)

    projection = FAMILY_ADAPTERS["sd15"].latent_rgb

    with torch.inference_mode():
        preview = median_seconds(lambda: preview_event(latents, projection, step=1), args.repeats, sync)
        decode = median_seconds(lambda: vae.decode(latents / 0.18215).sample, args.repeats, sync)

    result = {
        "size": args.size,
        "device": str(device),
        "preview_ms": round(preview * 1000, 3),
        "vae_decode_ms": round(decode * 1000, 3),
        "preview_over_decode": round(preview / decode, 5),
    }
    print(f"{'what':<28}{'median ms':>12}")
    print(f"{'preview (projection+WebP)':<28}{result['preview_ms']:>12.3f}")
    print(f"{'SD1.5 VAE decode (baseline)':<28}{result['vae_decode_ms']:>12.3f}")
    print(f"verdict: a preview costs {result['preview_over_decode']:.4%} of a VAE decode at {args.size}x{args.size}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
