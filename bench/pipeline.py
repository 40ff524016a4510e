"""Pipeline speed: plain diffusers against the worker's path, images/s at several batch sizes, model FLOP use.

`--model sd15` builds the Stable Diffusion 1.5 architecture (UNet, VAE, CLIP text encoder) with random weights from
its config in code (no download), saves it and loads it through the worker's own loading code; `--model tiny` is the
toy model, so the script runs in CI on a CPU. Both paths run in this process, one after the other, same inputs.

    python bench/pipeline.py --device cuda --model sd15 --size 512 --steps 25 --batches 1,4,8 --json out.json
    python bench/pipeline.py --device cpu --model tiny --size 64 --steps 2 --batches 1,2 --repeats 1   # CI

Floor arithmetic (docs/performance.md): SD1.5 at 512x512 costs 1.61 TFLOP per denoising step with CFG and 2.51 TFLOP
per VAE decode, so a 25-step image is 42.8 TFLOP; on an H100 (989 TFLOP/s dense fp16) that is 43 ms at full use.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from bench.common import median_seconds
from core.schemas import GenerateRequest
from core.settings import Settings
from worker.pipeline.generation import generate_batch, seeded_generators
from worker.pipeline.loading import load_model

STEP_TFLOP_512 = 1.61  # UNet forward at batch 2 (CFG), 512x512
VAE_TFLOP_512 = 2.51


def build_sd15_random(folder: Path) -> Path:
    """Stable Diffusion 1.5's architecture with random weights (`bench.pipeline_families.build_sd15`, on the host in
    float32), saved as a diffusers folder."""
    from bench.pipeline_families import build

    pipeline = build("sd15", folder, torch.device("cpu"), torch.float32)
    pipeline.save_pretrained(str(folder / "sd15"), safe_serialization=True)
    return folder / "sd15"


def measure_plain(
    folder: str, device: torch.device, dtype: torch.dtype, request: GenerateRequest, repeats: int, sync
) -> float:
    """Median seconds of one image through a plain `StableDiffusionPipeline` (no runtime options)."""
    from diffusers import EulerDiscreteScheduler

    plain = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    plain.set_progress_bar_config(disable=True)

    def run() -> None:
        plain.scheduler = EulerDiscreteScheduler.from_config(plain.scheduler.config)
        plain(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            generator=seeded_generators([request.seed or 0]),
        )

    return median_seconds(run, repeats, sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the worker's UNet")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak (H100 SXM: 989)")
    parser.add_argument("--json")
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    scratch = Path(tempfile.mkdtemp(prefix="imagegen-bench-"))
    source = str(build_sd15_random(scratch)) if args.model == "sd15" else "tiny"
    settings = Settings(  # the threads plain diffusers runs with: the paths differ only in what the worker adds
        model=source,
        cache_dir=scratch / "cache",
        device=str(device),
        compile=args.compile,
        cpu_threads=torch.get_num_threads(),
    )

    request = GenerateRequest(
        prompt="a lighthouse at dusk",
        negative_prompt="blurry",
        width=args.size,
        height=args.size,
        steps=args.steps,
        guidance_scale=7.5,
        sampler="euler",
        seed=1,
    )

    # Baseline: plain diffusers, as a script would use it.
    if args.model == "tiny":
        load_model(settings.model_copy(update={"device": "cpu"}))  # builds tiny into the cache
    folder = source if args.model == "sd15" else str(settings.cache_dir / "tiny-v2")
    baseline = measure_plain(folder, device, dtype, request, args.repeats, sync)
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # The worker's path: its loading code (runtime options applied) and its batched generation call.
    worker = load_model(settings)
    config = dict(worker.pipeline.scheduler.config)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        requests = [request.model_copy(update={"seed": 100 + i}) for i in range(batch)]
        seconds = median_seconds(
            lambda requests=requests: generate_batch(worker.pipeline, config, requests), args.repeats, sync
        )
        scale = (args.size / 512) ** 2
        tflop = batch * (args.steps * STEP_TFLOP_512 + VAE_TFLOP_512) * scale
        mfu = tflop / seconds / args.peak_tflops if args.model == "sd15" and device.type == "cuda" else None
        rows.append({"batch": batch, "seconds": seconds, "images_per_s": batch / seconds, "mfu": mfu})

    speedup = baseline / rows[0]["seconds"] if rows[0]["batch"] == 1 else None
    print(f"{args.model} {args.size}x{args.size}, {args.steps} steps, CFG 7.5, {device} {dtype}")
    print(f"{'path':<28}{'batch':>6}{'s/call':>10}{'images/s':>10}{'MFU':>8}")
    print(f"{'plain diffusers (baseline)':<28}{1:>6}{baseline:>10.3f}{1 / baseline:>10.2f}{'':>8}")
    for row in rows:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
        print(f"{'worker path':<28}{row['batch']:>6}{row['seconds']:>10.3f}{row['images_per_s']:>10.2f}{mfu:>8}")
    if speedup is not None and device.type == "cuda":
        verdict = "PASS" if speedup >= 1.5 else "FAIL"
        print(f"verdict: {verdict} worker path {speedup:.2f}x plain diffusers at batch 1 (target 1.5x)")
    elif speedup is not None:
        print(f"verdict: n/a on {device} (the 1.5x target is for CUDA); worker path {speedup:.2f}x plain diffusers")
    best = max((row for row in rows if row["mfu"] is not None), key=lambda r: r["mfu"], default=None)
    if best is not None:
        print(
            f"verdict: {'PASS' if best['mfu'] >= 0.4 else 'FAIL'} MFU {best['mfu']:.1%} at batch {best['batch']}"
            " (target 40 %)"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": args.model,
                    "device": str(device),
                    "size": args.size,
                    "steps": args.steps,
                    "baseline_seconds": baseline,
                    "speedup_batch_1": speedup,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
