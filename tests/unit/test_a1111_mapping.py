"""The A1111 request mapping without Redis: sampler names per family, CFG per family, LoRA tags in the prompt, and
the parameters text parsed as A1111's png-info parses it."""

from __future__ import annotations

import pytest

from core.samplers import Sampler, from_a1111
from core.schemas import FieldError
from service.a1111_infotext import parse_infotext
from service.a1111_requests import Img2ImgRequest, Txt2ImgRequest, split_loras, to_generate_request


@pytest.mark.parametrize(
    ("name", "scheduler", "family", "expected"),
    [
        ("Euler a", None, "sd15", Sampler.EULER_A),
        ("euler a", "automatic", "sdxl", Sampler.EULER_A),
        ("DPM++ 2M", "karras", "sd15", Sampler.DPMPP_2M_KARRAS),
        ("DPM++ 2M Karras", "Automatic", "sd15", Sampler.DPMPP_2M_KARRAS),
        ("DPM++ 2M Karras", "karras", "sd15", Sampler.DPMPP_2M_KARRAS),
        ("Euler", None, "sd15", Sampler.EULER),
        ("Euler", None, "flux", Sampler.FLOW_EULER),  # one A1111 name, the row of the model's family
        ("dpmpp_2m", None, "sd15", Sampler.DPMPP_2M),  # this API's own names are taken too
        ("Euler a", None, "flux", None),
        ("Euler", "exponential", "sd15", None),
        ("Heun", None, "flux", None),
    ],
)
def test_a1111_sampler_names_map_onto_the_table(
    name: str, scheduler: str | None, family: str, expected: Sampler | None
) -> None:
    assert from_a1111(name, scheduler, family) is expected


def test_multistep_flow_solvers_are_text_to_image_only() -> None:
    assert from_a1111("DPM++ 2M", None, "flux", "txt2img") is Sampler.FLOW_DPMPP_2M
    assert from_a1111("DPM++ 2M", None, "flux", "img2img") is None


def test_webuiapi_defaults_map_to_an_sd15_request() -> None:
    body = Txt2ImgRequest(prompt="a cat", seed=-1, steps=20, sampler_name="Euler a", scheduler="automatic", eta=1.0)
    request = to_generate_request(body, None, "sd15")
    assert (request.seed, request.steps, request.guidance_scale, request.sampler) == (None, 20, 7.0, Sampler.EULER_A)
    assert (request.width, request.height, request.num_images, request.model) == (512, 512, 1, None)


def test_cfg_scale_is_true_cfg_on_flux_and_distilled_cfg_its_guidance() -> None:
    body = Txt2ImgRequest(prompt="x", sampler_name="Euler", cfg_scale=4, distilled_cfg_scale=2.5, width=64, height=64)
    request = to_generate_request(body, "flux", "flux")
    assert (request.true_cfg_scale, request.guidance_scale) == (4.0, 2.5)
    off = to_generate_request(body.model_copy(update={"cfg_scale": 1.0, "distilled_cfg_scale": None}), "f", "flux")
    assert off.true_cfg_scale is None and "guidance_scale" not in off.model_fields_set  # the model's default
    with pytest.raises(FieldError, match="distilled_cfg_scale"):
        to_generate_request(body, None, "sd15")


def test_img2img_with_a_mask_is_inpainting() -> None:
    body = Img2ImgRequest(prompt="x", init_images=["aW1n"], mask="bWFzaw==", denoising_strength=0.5, steps=10)
    request = to_generate_request(body, None, "sd15")
    assert (request.mode.value, request.image, request.mask_image, request.strength) == (
        "inpaint",
        "aW1n",
        "bWFzaw==",
        0.5,
    )
    plain = to_generate_request(body.model_copy(update={"mask": None}), None, "sd15")
    assert (plain.mode.value, plain.init_image) == ("img2img", "aW1n")


def test_lora_tags_become_adapters_unless_extra_networks_are_off() -> None:
    assert split_loras("a cat <lora:colour-swap:0.7> on a mat <lora:ink>") == (
        "a cat on a mat",
        [{"name": "colour-swap", "scale": 0.7}, {"name": "ink", "scale": 1.0}],
    )
    with pytest.raises(FieldError, match="prompt"):
        split_loras("<lora:x:lots>")
    body = Txt2ImgRequest(prompt="a <lora:x:1>", disable_extra_networks=True)
    assert to_generate_request(body, None, "sd15").prompt == "a <lora:x:1>"


def test_parameters_text_parses_as_a1111_parses_it() -> None:
    text = 'a cat,\nin a hat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Size: 64x72, Lora hashes: "a: 1, b: 2"'
    assert parse_infotext(text) == {
        "Prompt": "a cat,\nin a hat",
        "Negative prompt": "dog",
        "Steps": "20",
        "Sampler": "Euler a",
        "Size-1": "64",
        "Size-2": "72",
        "Lora hashes": "a: 1, b: 2",
    }
    assert parse_infotext("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}
