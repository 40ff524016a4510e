"""Parameters inside the files (AUTOMATIC1111 format), read back with Pillow, and the quality setting."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.schemas import GenerateRequest, OutputFormat, Sampler
from worker.encoding import a1111_parameters, encode_image, read_parameters

REQUEST = GenerateRequest(
    prompt="a red circle, détaillé",
    negative_prompt="blurry",
    steps=20,
    sampler="euler_a",
    guidance_scale=4.0,
    width=64,
    height=64,
    seed=41,
    num_images=2,
)


def test_a1111_text() -> None:
    assert a1111_parameters(REQUEST, 42, "demo") == (
        "a red circle, détaillé\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 4, Seed: 42, Size: 64x64, Model: demo"
    )
    assert "Negative prompt" not in a1111_parameters(REQUEST.model_copy(update={"negative_prompt": ""}), 1, "m")


@pytest.mark.parametrize(
    ("sampler", "a1111_name"),
    [("pndm", "PLMS"), ("dpmpp_2m", "DPM++ 2M"), ("dpmpp_2m_karras", "DPM++ 2M Karras"), ("unipc", "UniPC")],
)
def test_a1111_sampler_names(sampler: str, a1111_name: str) -> None:
    text = a1111_parameters(REQUEST.model_copy(update={"sampler": Sampler(sampler)}), 42, "demo")
    assert f", Sampler: {a1111_name}, " in text


@pytest.mark.parametrize("output_format", list(OutputFormat))
def test_parameters_read_back_with_pillow(output_format: OutputFormat) -> None:
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    text = a1111_parameters(REQUEST, 42, "demo")
    data = encode_image(image, output_format, parameters=text)
    assert Image.open(io.BytesIO(data)).format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]
    assert read_parameters(data) == text


def test_quality_changes_lossy_size() -> None:
    image = Image.effect_noise((128, 128), 64).convert("RGB")
    low = encode_image(image, OutputFormat.JPEG, quality=10)
    high = encode_image(image, OutputFormat.JPEG, quality=95)
    assert len(low) < len(high)
