"""The tiny model on a CUDA device, through the worker's `ResidentPipeline`: half precision and the GPU runtime
options keep the CPU's pixels for a seed, and each denoising step is timed on the device with CUDA events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.schemas import GenerateRequest
from core.settings import Settings
from worker.pipeline.resident import ResidentPipeline
from worker.pipeline.timing import DeviceClock

pytestmark = pytest.mark.gpu

REQUEST = GenerateRequest(prompt="a red circle", negative_prompt="blue", width=64, height=64, steps=4, seed=7)
# Pixel differences in 0-255 levels. On CPU, bfloat16 against float32 gives a mean of 1 and a max of 7 for REQUEST;
# another seed gives a mean of 39, so a mean bound of 2 tells "same image, less precision" from "another image".
MEAN_LEVELS = 2.0
MAX_LEVELS = 24


def _pixels(resident: ResidentPipeline, request: GenerateRequest = REQUEST) -> np.ndarray:
    [[image]] = resident.generate([request]).images
    return np.asarray(image).astype(int)


@pytest.fixture(scope="module")
def cpu_pixels(cache_dir: Path) -> np.ndarray:
    """REQUEST's image from the tiny model on the CPU in float32 (the reference)."""
    return _pixels(ResidentPipeline.load(Settings(model="tiny", cache_dir=cache_dir, device="cpu")))


@pytest.fixture(scope="module")
def plain_cuda(cache_dir: Path) -> ResidentPipeline:
    """The tiny model on CUDA in float16 with every runtime option off: against the CPU, only device and dtype
    change."""
    settings = Settings(
        model="tiny",
        cache_dir=cache_dir,
        device="cuda",
        dtype="float16",
        channels_last=False,
        fuse_qkv=False,
        vae_tiling=False,
    )
    return ResidentPipeline.load(settings)


def test_float16_on_cuda_draws_the_cpu_float32_image(cpu_pixels: np.ndarray, plain_cuda: ResidentPipeline) -> None:
    assert plain_cuda.model.device.type == "cuda" and plain_cuda.model.dtype == torch.float16
    assert next(plain_cuda.model.pipeline.unet.parameters()).dtype == torch.float16
    got = _pixels(plain_cuda)
    assert got.shape == cpu_pixels.shape == (64, 64, 3)
    difference = np.abs(got - cpu_pixels)
    assert difference.mean() <= MEAN_LEVELS, difference.mean()
    assert difference.max() <= MAX_LEVELS, difference.max()
    # The seed decides the image on CUDA as on the CPU (CPU generators): another seed is another image.
    other = _pixels(plain_cuda, REQUEST.model_copy(update={"seed": REQUEST.seed + 1}))
    assert np.abs(other - cpu_pixels).mean() > 4 * MEAN_LEVELS


def test_cuda_defaults_turn_the_runtime_options_on_and_keep_the_pixels(
    cache_dir: Path, plain_cuda: ResidentPipeline
) -> None:
    fast = ResidentPipeline.load(Settings(model="tiny", cache_dir=cache_dir, device="cuda"))  # options at defaults
    assert fast.model.dtype == torch.float16
    weight = fast.model.pipeline.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert fast.model.pipeline.unet.original_attn_processors is not None  # the QKV projections were fused
    assert getattr(plain_cuda.model.pipeline.unet, "original_attn_processors", None) is None
    difference = np.abs(_pixels(fast) - _pixels(plain_cuda))
    assert difference.mean() <= MEAN_LEVELS / 2, difference.mean()
    assert difference.max() <= MAX_LEVELS, difference.max()


def test_cuda_events_time_every_step_and_phase(plain_cuda: ResidentPipeline) -> None:
    assert DeviceClock(plain_cuda.model.device).cuda  # the facade's timers mark CUDA events on this device
    generation = plain_cuda.generate([REQUEST])
    steps = generation.step_seconds
    assert len(steps) == REQUEST.steps
    assert all(seconds > 0 for seconds in steps), steps
    phases = generation.phase_seconds
    assert set(phases) == {"text_encode", "denoise", "vae_decode"}
    assert all(seconds > 0 for seconds in phases.values()), phases
    assert phases["denoise"] == pytest.approx(sum(steps), rel=1e-3)
