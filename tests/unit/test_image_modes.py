"""img2img and inpainting on the tiny model: the mode pipelines share the resident weights, strength sets how many
steps run, inpainting keeps the unmasked pixels, and a batch of image jobs equals each job alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.schemas import GenerateRequest, GenerationMode
from core.settings import Settings
from worker.pipeline.generation import generate_batch, generate_images, mode_pipeline
from worker.pipeline.loading import load_model
from worker.pipeline.samplers import build_scheduler, denoising_iterations

BASE = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 10, "sampler": "euler", "seed": 5}


@pytest.fixture(scope="module")
def pipeline(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu")).pipeline


def _picture(colour: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    image = Image.new("RGB", (64, 64), (30, 60, 220))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=colour)
    return image


def _mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # repaint the left half
    return mask


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def _counting_hook(seen: list[tuple[int, int]]):
    def hook(step: int, total: int, latents) -> bool:
        seen.append((step, total))
        return False

    return hook


def test_mode_pipelines_share_every_component(pipeline) -> None:
    for mode in (GenerationMode.IMG2IMG, GenerationMode.INPAINT):
        variant = mode_pipeline(pipeline, mode)
        assert variant is not pipeline
        assert variant is mode_pipeline(pipeline, mode)  # built once
        for name in ("unet", "vae", "text_encoder", "tokenizer"):
            assert getattr(variant, name) is getattr(pipeline, name), name


@pytest.mark.parametrize("strength", [0.3, 0.7, 1.0])
def test_img2img_runs_steps_times_strength(pipeline, strength: float) -> None:
    config = dict(pipeline.scheduler.config)
    request = GenerateRequest(**BASE, init_image="sha256:x", strength=strength)
    seen: list[tuple[int, int]] = []
    images = generate_images(pipeline, config, request, _counting_hook(seen), {"init_image": _picture()})
    expected = denoising_iterations(build_scheduler(request.sampler, config), request.steps, request.denoise_strength)
    assert expected == int(10 * strength)
    assert [step for step, _ in seen] == list(range(1, expected + 1))
    assert {total for _, total in seen} == {expected}
    assert images[0].size == (64, 64)


def test_img2img_depends_on_the_image_and_strength(pipeline) -> None:
    config = dict(pipeline.scheduler.config)
    request = GenerateRequest(**BASE, init_image="sha256:x", strength=0.5)
    red = _pixels(generate_images(pipeline, config, request, inputs={"init_image": _picture()})[0])
    again = _pixels(generate_images(pipeline, config, request, inputs={"init_image": _picture()})[0])
    green = _pixels(generate_images(pipeline, config, request, inputs={"init_image": _picture((0, 220, 0))})[0])
    stronger = generate_images(
        pipeline, config, request.model_copy(update={"strength": 0.9}), inputs={"init_image": _picture()}
    )[0]
    assert np.array_equal(red, again)  # seeded
    assert np.abs(red - green).max() > 10
    assert np.abs(red - _pixels(stronger)).max() > 10


def test_img2img_resizes_the_input_to_the_requested_size(pipeline) -> None:
    config = dict(pipeline.scheduler.config)
    request = GenerateRequest(**{**BASE, "width": 96, "height": 64}, init_image="sha256:x", strength=0.5)
    image = generate_images(pipeline, config, request, inputs={"init_image": _picture().resize((40, 30))})[0]
    assert image.size == (96, 64)


def test_inpainting_keeps_the_unmasked_pixels_and_repaints_the_masked(pipeline) -> None:
    config = dict(pipeline.scheduler.config)
    request = GenerateRequest(**BASE, image="sha256:x", mask_image="sha256:y", strength=1.0)
    source = _picture()
    result = _pixels(generate_images(pipeline, config, request, inputs={"image": source, "mask_image": _mask()})[0])
    given = _pixels(source)
    assert np.abs(result[:, 32:] - given[:, 32:]).max() <= 1  # black half of the mask: the input, as sent
    assert np.abs(result[:, :32] - given[:, :32]).mean() > 20  # white half: repainted


def test_a_batch_of_img2img_jobs_equals_each_alone(pipeline) -> None:
    config = dict(pipeline.scheduler.config)
    requests = [
        GenerateRequest(**{**BASE, "seed": 1}, init_image="sha256:a", strength=0.6, num_images=2),
        GenerateRequest(**{**BASE, "seed": 2, "prompt": "a green square"}, init_image="sha256:b", strength=0.6),
    ]
    inputs = [{"init_image": _picture()}, {"init_image": _picture((250, 250, 0))}]
    batched = generate_batch(pipeline, config, requests, inputs=inputs)
    for request, given, images in zip(requests, inputs, batched, strict=True):
        alone = generate_images(pipeline, config, request, inputs=given)
        assert len(images) == request.num_images
        for got, want in zip(images, alone, strict=True):
            assert np.abs(_pixels(got) - _pixels(want)).max() <= 2


def test_modes_and_strengths_do_not_share_a_batch(pipeline) -> None:
    config = dict(pipeline.scheduler.config)
    txt = GenerateRequest(**BASE)
    img = GenerateRequest(**BASE, init_image="sha256:a", strength=0.6)
    with pytest.raises(ValueError, match="share"):
        generate_batch(pipeline, config, [txt, img], inputs=[{}, {"init_image": _picture()}])
    with pytest.raises(ValueError, match="share"):
        generate_batch(
            pipeline,
            config,
            [img, img.model_copy(update={"strength": 0.7})],
            inputs=[{"init_image": _picture()}] * 2,
        )


def test_request_modes_are_checked() -> None:
    assert GenerateRequest(prompt="x").mode is GenerationMode.TXT2IMG
    assert GenerateRequest(prompt="x", init_image="abc").mode is GenerationMode.IMG2IMG
    assert GenerateRequest(prompt="x", image="abc", mask_image="abc").mode is GenerationMode.INPAINT
    with pytest.raises(ValueError, match="mask_image"):
        GenerateRequest(prompt="x", image="abc")
    with pytest.raises(ValueError, match="not both"):
        GenerateRequest(prompt="x", init_image="abc", image="abc", mask_image="abc")
    with pytest.raises(ValueError, match="runs no step"):
        GenerateRequest(prompt="x", init_image="abc", steps=4, strength=0.2)
