"""Runtime options change speed, not pixels: channels_last and fused QKV give the same images (tiny, CPU)."""

from __future__ import annotations

import os

import numpy as np
import torch

from core.schemas import GenerateRequest
from core.settings import Settings
from worker.pipeline.acceleration import cpu_threads
from worker.pipeline.generation import generate_images
from worker.pipeline.loading import load_model

REQUEST = GenerateRequest(prompt="a red circle", negative_prompt="blue", width=64, height=64, steps=3, seed=5)


def test_options_default_off_on_cpu(cache_dir) -> None:
    model = load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))
    assert next(model.pipeline.unet.parameters()).is_contiguous()  # no channels_last on CPU by default


def test_channels_last_and_fused_qkv_keep_the_pixels(cache_dir) -> None:
    plain = load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))
    fast = load_model(
        Settings(model="tiny", cache_dir=cache_dir, device="cpu", channels_last=True, fuse_qkv=True, vae_tiling=True)
    )
    weight = fast.pipeline.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert fast.pipeline.unet.original_attn_processors is not None  # the QKV projections were fused
    config = dict(plain.pipeline.scheduler.config)
    want = np.asarray(generate_images(plain.pipeline, config, REQUEST)[0]).astype(int)
    got = np.asarray(generate_images(fast.pipeline, config, REQUEST)[0]).astype(int)
    assert np.abs(got - want).max() <= 2


def test_cpu_worker_leaves_a_core_to_the_host_unless_told(cache_dir) -> None:
    """A CPU worker takes torch's threads less one core (the API, Redis and clients share its host: docs/
    performance.md), at least one; IMAGEGEN_CPU_THREADS overrides, and loading the model applies it."""
    usable = len(os.sched_getaffinity(0))
    unset = Settings(cpu_threads=None)  # whatever IMAGEGEN_CPU_THREADS the environment has
    assert cpu_threads(unset) == max(1, min(torch.get_num_threads(), usable - 1))
    assert cpu_threads(unset) < usable or usable == 1
    assert cpu_threads(Settings(cpu_threads=3)) == 3
    before = torch.get_num_threads()
    try:
        load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu", cpu_threads=1))
        assert torch.get_num_threads() == 1
        load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu", cpu_threads=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
