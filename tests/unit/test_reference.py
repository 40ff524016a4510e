"""The worker's pixels equal plain diffusers' for the same inputs, for every sampler (tiny model, CPU)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from core.samplers import samplers_for
from core.schemas import GenerateRequest, OutputFormat, Sampler
from core.settings import Settings
from tests.unit.test_samplers import EXPECTED
from worker.encoding import encode_image
from worker.pipeline.generation import generate_images
from worker.pipeline.loading import load_model
from worker.pipeline.tiny import ensure_tiny_pipeline

SAMPLER_OPTIONS = {
    Sampler.DPMPP_2M: {"algorithm_type": "dpmsolver++", "solver_order": 2},
    Sampler.DPMPP_2M_KARRAS: {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
}


@pytest.fixture(scope="module")
def worker_model(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))


@pytest.fixture(scope="module")
def reference_pipeline(cache_dir):
    pipe = StableDiffusionPipeline.from_pretrained(str(ensure_tiny_pipeline(cache_dir)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _reference_images(pipe: StableDiffusionPipeline, request: GenerateRequest) -> list[np.ndarray]:
    scheduler_class = EXPECTED[request.sampler]
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **SAMPLER_OPTIONS.get(request.sampler, {}))
    seeds = [request.seed + i for i in range(request.num_images)]
    output = pipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=request.width,
        height=request.height,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        num_images_per_prompt=request.num_images,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    return [np.asarray(image) for image in output.images]


@pytest.mark.parametrize("sampler", samplers_for("sd15"))  # the flow families: test_flow_families.py
def test_worker_matches_plain_diffusers(worker_model, reference_pipeline, sampler: Sampler) -> None:
    request = GenerateRequest(
        prompt="a red circle on a blue background",
        negative_prompt="green",
        width=64,
        height=72,
        steps=4,
        guidance_scale=6.0,
        sampler=sampler,
        seed=1234,
        num_images=2,
    )
    base_config = dict(worker_model.pipeline.scheduler.config)
    steps_seen: list[tuple[int, int]] = []
    images = generate_images(
        worker_model.pipeline, base_config, request, lambda s, t, latents: steps_seen.append((s, t)) is not None
    )
    # Through the worker's PNG encoding, as a client receives them.
    decoded = [np.asarray(Image.open(io.BytesIO(encode_image(im, OutputFormat.PNG)))) for im in images]
    expected = _reference_images(reference_pipeline, request)

    assert len(decoded) == len(expected) == 2
    for got, want in zip(decoded, expected, strict=True):
        assert got.shape == want.shape == (72, 64, 3)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert not np.array_equal(decoded[0], decoded[1]), "the two images of one job must differ"
    assert steps_seen[-1][0] == steps_seen[-1][1] == len(steps_seen)


def test_num_images_keeps_image_zero(worker_model) -> None:
    # Image i uses seed + i, so the first image of a 3-image job equals a 1-image job with the same seed.
    base_config = dict(worker_model.pipeline.scheduler.config)
    one = GenerateRequest(prompt="x", width=64, height=64, steps=3, seed=99, sampler="euler")
    three = one.model_copy(update={"num_images": 3})
    single = np.asarray(generate_images(worker_model.pipeline, base_config, one)[0])
    first_of_three = np.asarray(generate_images(worker_model.pipeline, base_config, three)[0])
    assert np.abs(single.astype(int) - first_of_three.astype(int)).max() <= 1
