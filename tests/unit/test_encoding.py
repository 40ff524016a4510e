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


def _flow_request(**fields: object) -> GenerateRequest:
    base = {"prompt": "a red circle", "width": 1024, "height": 768, "steps": 28, "sampler": "flow_euler"}
    return GenerateRequest.model_validate({**base, **fields})


def test_flux_writes_true_cfg_as_cfg_scale_and_its_distilled_guidance() -> None:
    # FLUX.1-dev's guidance_scale is an input of the model, not CFG: written as Forge writes it. Its CFG scale is
    # the true CFG that ran (1: off, one pass per step).
    assert a1111_parameters(_flow_request(guidance_scale=3.5), 42, "flux-dev", "flux") == (
        "a red circle\nSteps: 28, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 42, "
        "Size: 1024x768, Model: flux-dev"
    )
    text = a1111_parameters(
        _flow_request(guidance_scale=3.5, true_cfg_scale=4, negative_prompt="blurry"), 1, "flux-dev", "flux"
    )
    assert text.split("\n")[1] == "Negative prompt: blurry"
    assert ", CFG scale: 4, Distilled CFG Scale: 3.5, " in text
    # schnell: no guidance at all, still said.
    assert ", CFG scale: 1, Distilled CFG Scale: 0, " in a1111_parameters(
        _flow_request(guidance_scale=0.0, steps=4), 1, "flux-schnell", "flux"
    )


def test_qwen_image_cfg_scale_is_its_true_cfg_scale() -> None:
    text = a1111_parameters(_flow_request(guidance_scale=1.0, true_cfg_scale=4.0), 3, "qwen-image", "qwen-image")
    assert ", CFG scale: 4, Seed: 3, " in text
    assert "Distilled" not in text  # 1.0: the (non-distilled) checkpoint reads no guidance strength
    distilled = a1111_parameters(_flow_request(guidance_scale=2.5, true_cfg_scale=1.0), 3, "q", "qwen-image")
    assert ", CFG scale: 1, Distilled CFG Scale: 2.5, " in distilled


@pytest.mark.parametrize("family", ["sd3", "sd15", "sdxl", None, "no-such-family"])
def test_cfg_families_write_guidance_scale(family: str | None) -> None:
    text = a1111_parameters(_flow_request(guidance_scale=7.0), 5, "m", family)
    assert ", CFG scale: 7, Seed: 5, " in text and "Distilled" not in text


@pytest.mark.parametrize(
    ("sampler", "a1111_name"),
    [("flow_euler", "Euler"), ("flow_heun", "Heun"), ("flow_dpmpp_2m", "DPM++ 2M"), ("flow_unipc", "UniPC")],
)
def test_flow_sampler_names(sampler: str, a1111_name: str) -> None:
    text = a1111_parameters(_flow_request(sampler=sampler, guidance_scale=4.5), 42, "sd35", "sd3")
    assert f"Steps: 28, Sampler: {a1111_name}, CFG scale: 4.5, " in text


def test_flow_img2img_writes_its_strength() -> None:
    request = _flow_request(init_image="sha256:" + "0" * 64, strength=0.6, true_cfg_scale=4.0, guidance_scale=1.0)
    text = a1111_parameters(request, 42, "qwen-image", "qwen-image")
    assert text.endswith("CFG scale: 4, Seed: 42, Size: 1024x768, Model: qwen-image, Denoising strength: 0.6")
