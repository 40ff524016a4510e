"""Runtime options of a loaded pipeline: memory format, fused attention projections, compilation, VAE tiling, CPU
threads. Defaults follow the device: the CUDA options are on for GPUs, off on CPUs.

Stream policy: every kernel runs on the default CUDA stream of the worker's one device; the worker overlaps work on
the host instead (PNG/JPEG/WebP encoding and Redis writes run on a thread while the next batch is denoised).
"""

from __future__ import annotations

import logging
import os

import torch
from diffusers import DiffusionPipeline

from core.samplers import Sampler
from core.schemas import GenerateRequest
from core.settings import Settings

log = logging.getLogger(__name__)


def _on(setting: bool | None, device: torch.device) -> bool:
    return device.type == "cuda" if setting is None else setting


def apply_runtime_options(pipeline: DiffusionPipeline, device: torch.device, settings: Settings) -> list[str]:
    """Apply the configured options to a loaded pipeline; returns what was applied (for the log)."""
    applied = []
    if device.type == "cpu":
        threads = cpu_threads(settings)
        torch.set_num_threads(threads)
        applied.append(f"cpu_threads={threads}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # only fp32 matmuls are affected; fp16/bf16 weights are not
        torch.backends.cudnn.allow_tf32 = True
    unet = getattr(pipeline, "unet", None)
    if _on(settings.channels_last, device) and unet is not None:  # a convolutional UNet; transformers gain nothing
        unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if _on(settings.fuse_qkv, device) and hasattr(pipeline, "fuse_qkv_projections"):
        pipeline.fuse_qkv_projections()
        applied.append("fused_qkv")
    if _on(settings.vae_tiling, device) and hasattr(pipeline.vae, "enable_tiling"):
        pipeline.vae.enable_tiling()  # only images larger than the VAE's tile are decoded in tiles
        applied.append("vae_tiling")
    if settings.compile:
        name = denoiser_name(pipeline)
        setattr(pipeline, name, torch.compile(getattr(pipeline, name), mode=settings.compile_mode, fullgraph=False))
        applied.append(f"compile({settings.compile_mode})")
    log.info("runtime options: %s", ", ".join(applied) or "none")
    return applied


def cpu_threads(settings: Settings) -> int:
    """Torch's intra-op threads on a CPU worker: the setting, else torch's default less the one core it would leave
    no one else. A CPU worker shares its host with the API, Redis and clients (`imagegen dev`, compose on a laptop);
    torch's threads spin while they wait for each other, so when another process takes one of the cores they all run
    on, every parallel op waits for the preempted thread. Measured (`bench/polling.py`, 2 cores, model demo): with 2
    threads the worker made 6.4-8.2 images/s alone on 1.9 cores and 3.5-4.3 beside 0.4-0.6 cores of the API and
    pollers; with 1 thread 6.1-6.6 alone on 0.97 cores, and as much beside them (docs/performance.md). Where the
    worker has the host to itself, set `IMAGEGEN_CPU_THREADS` to all its cores."""
    if settings.cpu_threads:
        return settings.cpu_threads
    return max(1, min(torch.get_num_threads(), len(os.sched_getaffinity(0)) - 1))


def denoiser_name(pipeline: DiffusionPipeline) -> str:
    """The attribute that holds the denoising network: `unet` for the SD line, `transformer` for the flow families."""
    return "unet" if getattr(pipeline, "unet", None) is not None else "transformer"


def native_side(pipeline: DiffusionPipeline) -> int:
    """The side, in pixels, the model was built for: the denoiser's sample size times the VAE factor (the UNet and
    SD3 configs hold it; FLUX's and Qwen-Image's pipelines hold `default_sample_size`)."""
    config = getattr(pipeline, denoiser_name(pipeline)).config
    sample = config.get("sample_size") or getattr(pipeline, "default_sample_size", 128)
    return int(sample * pipeline.vae_scale_factor)


def warm_up_request(pipeline: DiffusionPipeline, steps: int) -> GenerateRequest:
    """A request at the model's native size; with `torch.compile` on, the warm-up compiles for that size. The
    sampler is the first of the model's kind (flow models take only flow samplers)."""
    side = native_side(pipeline)
    flow = type(pipeline.scheduler).__name__.startswith("FlowMatch")
    sampler = Sampler.FLOW_EULER if flow else GenerateRequest.model_fields["sampler"].default
    return GenerateRequest(prompt="warm-up", width=side, height=side, steps=steps, seed=0, sampler=sampler)
