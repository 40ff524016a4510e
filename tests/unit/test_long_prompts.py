"""Prompts past the 77-token window: truncated by default (the tail changes nothing), read whole in `chunk` mode (the
tail changes the picture), and short prompts give the same pixels in both modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.schemas import GenerateRequest
from core.settings import Settings
from worker.pipeline.generation import generate_batch, generate_images
from worker.pipeline.loading import load_model
from worker.pipeline.prompts import chunked_embeddings, needs_chunks, token_count

BASE = {"width": 64, "height": 64, "steps": 3, "sampler": "euler", "seed": 9, "guidance_scale": 5.0}
HEAD = "a red circle on a blue background, " * 4  # past 77 tokens (114 with the tiny tokenizer)


@pytest.fixture(scope="module")
def pipeline(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu")).pipeline


def _pixels(pipeline, prompt: str, mode: str, negative: str = "") -> np.ndarray:
    request = GenerateRequest(**BASE, prompt=prompt, negative_prompt=negative)
    image = generate_images(pipeline, dict(pipeline.scheduler.config), request, long_prompts=mode)[0]
    return np.asarray(image).astype(int)


def test_the_tail_past_the_window_counts_only_when_chunked(pipeline) -> None:
    assert token_count(pipeline, HEAD) > 77
    assert needs_chunks(pipeline, [HEAD])
    one, other = HEAD + "green", HEAD + "yellow"
    assert np.array_equal(_pixels(pipeline, one, "truncate"), _pixels(pipeline, other, "truncate"))
    assert np.abs(_pixels(pipeline, one, "chunk") - _pixels(pipeline, other, "chunk")).max() > 0


def test_short_prompts_take_the_plain_path_in_chunk_mode(pipeline) -> None:
    assert not needs_chunks(pipeline, ["a red circle"])
    assert np.array_equal(_pixels(pipeline, "a red circle", "chunk"), _pixels(pipeline, "a red circle", "truncate"))


def test_one_window_of_chunks_equals_diffusers_own_encoding(pipeline) -> None:
    ours = chunked_embeddings(pipeline, ["a red circle", ""], pipeline.unet.device)
    with torch.no_grad():
        theirs, uncond = pipeline.encode_prompt("a red circle", pipeline.unet.device, 1, True, negative_prompt="")
    assert ours.shape == (2, 77, theirs.shape[-1])
    assert np.allclose(ours[0].numpy(), theirs[0].numpy(), atol=1e-5)
    assert np.allclose(ours[1].numpy(), uncond[0].numpy(), atol=1e-5)


def test_a_batch_mixing_long_and_short_prompts_and_a_long_negative(pipeline) -> None:
    config = dict(pipeline.scheduler.config)
    requests = [
        GenerateRequest(**BASE, prompt=HEAD + "green"),
        GenerateRequest(**{**BASE, "seed": 3}, prompt="a square", negative_prompt=HEAD),
    ]
    batched = generate_batch(pipeline, config, requests, long_prompts="chunk")
    for request, images in zip(requests, batched, strict=True):
        alone = generate_images(pipeline, config, request, long_prompts="chunk")[0]
        assert np.abs(np.asarray(images[0]).astype(int) - np.asarray(alone).astype(int)).max() <= 2
