"""The rectified-flow families (FLUX, SD3, Qwen-Image) on their tiny models built in code: the worker's pixels equal
plain diffusers' for every sampler the family runs, in a batch of two jobs and in img2img and inpainting; samplers a
family's pipelines cannot take are refused at admission; previews unpack 16-channel and 2x2-packed latents (CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FluxPipeline,
    QwenImagePipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from core.samplers import samplers_for
from core.schemas import GenerateRequest, GenerationMode, Sampler
from core.settings import Settings
from worker.pipeline.families import family_adapter, pipeline_modes, unpack_2x2
from worker.pipeline.loading import declared_family, load_model, pick_dtype
from worker.pipeline.previews import latents_to_image
from worker.pipeline.resident import ResidentPipeline
from worker.pipeline.samplers import sampler_runs
from worker.pipeline.tiny import ensure_tiny_model

FAMILIES = {"tiny-flux": "flux", "tiny-sd3": "sd3", "tiny-qwen-image": "qwen-image"}
# Each flow sampler as plain diffusers spells it, written out here apart from the worker's table. The multistep
# solvers run on flow sigmas with the model's own shift.
REFERENCE = {
    Sampler.FLOW_EULER: (FlowMatchEulerDiscreteScheduler, {}),
    Sampler.FLOW_HEUN: (FlowMatchHeunDiscreteScheduler, {}),
    Sampler.FLOW_DPMPP_2M: (
        DPMSolverMultistepScheduler,
        {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "algorithm_type": "dpmsolver++"},
    ),
    Sampler.FLOW_UNIPC: (UniPCMultistepScheduler, {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
}
# What runs text-to-image in diffusers 0.42: FLUX's and Qwen-Image's pipelines pass custom sigmas and mu, which
# FlowMatchHeun does not take (nor DPM-Solver, but for FLUX's text-to-image, which drops them for flow sigmas).
TXT2IMG_SAMPLERS = {
    "flux": [Sampler.FLOW_EULER, Sampler.FLOW_DPMPP_2M, Sampler.FLOW_UNIPC],
    "sd3": [Sampler.FLOW_EULER, Sampler.FLOW_HEUN, Sampler.FLOW_DPMPP_2M, Sampler.FLOW_UNIPC],
    "qwen-image": [Sampler.FLOW_EULER, Sampler.FLOW_UNIPC],
}
# Each family's guidance: FLUX distilled guidance plus true CFG for the negative prompt; SD3 classic CFG; Qwen-Image
# true CFG.
GUIDANCE = {
    "flux": {"guidance_scale": 3.5, "true_cfg_scale": 2.0},
    "sd3": {"guidance_scale": 5.0},
    "qwen-image": {"guidance_scale": 1.0, "true_cfg_scale": 3.0},
}
SIDE = 64


@pytest.fixture(scope="module")
def residents(cache_dir) -> dict[str, ResidentPipeline]:
    return {
        name: ResidentPipeline(load_model(Settings(model=name, cache_dir=cache_dir, device="cpu"))) for name in FAMILIES
    }


@pytest.fixture(scope="module")
def references(cache_dir) -> dict[str, DiffusionPipeline]:
    pipes = {}
    for name in FAMILIES:
        pipe = DiffusionPipeline.from_pretrained(str(ensure_tiny_model(name, cache_dir)))
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = pipe
    return pipes


def _requests(family: str, sampler: Sampler, **extra: Any) -> list[GenerateRequest]:
    common = {"width": SIDE, "height": SIDE, "steps": 2, "sampler": sampler, **GUIDANCE[family], **extra}
    return [
        GenerateRequest(prompt="a red circle", negative_prompt="blue", seed=11, **common),
        GenerateRequest(prompt="a green square on grey", seed=12, **common),  # no negative prompt: an empty one
    ]


def _reference(pipe: Any, family: str, sampler: Sampler, requests: list[GenerateRequest], **call: Any) -> list:
    cls, options = REFERENCE[sampler]
    if options.get("use_flow_sigmas"):
        options = {**options, "flow_shift": pipe.scheduler.config.get("shift", 1.0)}
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **options)
    first = requests[0]
    arguments: dict[str, Any] = {"guidance_scale": first.guidance_scale, "max_sequence_length": 512}
    if family != "sd3":
        arguments["true_cfg_scale"] = first.true_cfg_scale
    if family == "qwen-image":
        arguments.update(guidance_scale=None, max_sequence_length=1024)
    output = pipe(
        prompt=[r.prompt for r in requests],
        negative_prompt=[r.negative_prompt for r in requests],
        width=SIDE,
        height=SIDE,
        num_inference_steps=first.steps,
        generator=[torch.Generator().manual_seed(r.seed) for r in requests],
        **arguments,
        **call,
    )
    return [np.asarray(image).astype(int) for image in output.images]


def _assert_same(got: list[Image.Image], want: list[np.ndarray]) -> None:
    assert len(got) == len(want) == 2
    for image, expected in zip(got, want, strict=True):
        pixels = np.asarray(image).astype(int)
        assert pixels.shape == expected.shape == (SIDE, SIDE, 3)
        assert np.abs(pixels - expected).max() <= 1
    assert not np.array_equal(np.asarray(got[0]), np.asarray(got[1])), "two jobs of one batch must differ"


@pytest.mark.parametrize(
    ("name", "sampler"), [(name, s) for name, family in FAMILIES.items() for s in TXT2IMG_SAMPLERS[family]]
)
def test_batch_matches_plain_diffusers(residents, references, name: str, sampler: Sampler) -> None:
    resident, family = residents[name], FAMILIES[name]
    requests = _requests(family, sampler)
    steps: list[tuple[int, int, tuple[int, ...]]] = []

    def on_step(step: int, total: int, latents: torch.Tensor) -> bool:
        steps.append((step, total, tuple(latents.shape)))
        return False

    generation = resident.generate(requests, on_step)
    images = [image for job in generation.images for image in job]
    _assert_same(images, _reference(references[name], family, sampler, requests))
    # The step hook sees (images, 16 channels, h, w) latents, FLUX's and Qwen-Image's unpacked from their 2x2 form.
    assert steps[-1][0] == steps[-1][1] == len(steps)
    assert {shape for _, _, shape in steps} == {(2, 16, SIDE // 8, SIDE // 8)}
    preview = resident.preview(torch.zeros(steps[-1][2]), step=3)
    assert (preview.width, preview.height) == (2 * SIDE // 8, SIDE // 8)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_image_modes_match_plain_diffusers(residents, references, name: str, mode: str) -> None:
    resident, family = residents[name], FAMILIES[name]
    picture = Image.new("RGB", (SIDE, SIDE), (200, 40, 30))
    mask = Image.new("L", (SIDE, SIDE), 0)
    mask.paste(255, (16, 16, 48, 48))
    if mode == "img2img":
        requests = _requests(family, Sampler.FLOW_EULER, init_image="sha256:x", strength=0.7)
        inputs = [{"init_image": picture}] * 2
        auto, call = AutoPipelineForImage2Image, {"image": [picture] * 2, "strength": 0.7}
    else:
        requests = _requests(family, Sampler.FLOW_EULER, image="sha256:x", mask_image="sha256:x", strength=0.7)
        inputs = [{"image": picture, "mask_image": mask}] * 2
        auto, call = AutoPipelineForInpainting, {"image": [picture] * 2, "mask_image": [mask] * 2, "strength": 0.7}
    assert mode in pipeline_modes(resident.model.pipeline)
    calls: list[int] = []
    generation = resident.generate(requests, lambda step, total, latents: calls.append(total) is not None, inputs)
    # Admission predicts the step callbacks the pipeline makes (the flow pipelines skip int(steps - steps*strength)).
    assert len(calls) == calls[-1] == resident.admit(requests[0], name)[0]
    variant = auto.from_pipe(references[name])
    variant.set_progress_bar_config(disable=True)
    expected = _reference(variant, family, Sampler.FLOW_EULER, requests, **call)
    if mode == "inpaint":  # the worker gives back the unmasked pixels exactly as sent
        expected = [np.asarray(Image.composite(Image.fromarray(e.astype(np.uint8)), picture, mask)) for e in expected]
        expected = [e.astype(int) for e in expected]
    _assert_same([image for job in generation.images for image in job], expected)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_samplers_offered_are_those_that_run(residents, name: str) -> None:
    resident, family = residents[name], FAMILIES[name]
    assert resident.family == family
    assert resident.samplers() == TXT2IMG_SAMPLERS[family]
    # core's sampler table (what the API allows) says the same as what the loaded pipelines take, mode by mode.
    for mode in GenerationMode:
        runs = [s for s in Sampler if sampler_runs(s, resident.base_scheduler_config, family, mode)]
        assert samplers_for(family, mode.value) == runs
    for sampler in set(REFERENCE) - set(TXT2IMG_SAMPLERS[family]):
        with pytest.raises(ValueError, match=sampler.value):
            resident.admit(GenerateRequest(prompt="x", sampler=sampler), name)
    # The multistep solvers have no `scale_noise`, which the flow families' img2img and inpainting call.
    img2img = GenerateRequest(prompt="x", sampler=Sampler.FLOW_UNIPC, init_image="sha256:x")
    with pytest.raises(ValueError, match="img2img"):
        resident.admit(img2img, name)
    iterations, _ = resident.admit(img2img.model_copy(update={"sampler": Sampler.FLOW_EULER}), name)
    assert iterations == int(img2img.steps * img2img.strength)


def test_packed_latents_unpack_as_diffusers_packs_them() -> None:
    latents = torch.randn(2, 16, 8, 6)
    for packer in (FluxPipeline._pack_latents, QwenImagePipeline._pack_latents):
        packed = packer(latents, 2, 16, 8, 6)
        assert packed.shape == (2, 12, 64)
        assert torch.equal(unpack_2x2(packed, 6, 8), latents)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_flow_families_load_as_bfloat16_on_cuda(cache_dir, name: str) -> None:
    family = declared_family(str(ensure_tiny_model(name, cache_dir)), None)  # from model_index.json
    assert family == FAMILIES[name]
    assert pick_dtype(None, torch.device("cuda"), family) is torch.bfloat16
    assert pick_dtype(None, torch.device("cpu"), family) is torch.float32
    assert pick_dtype("float16", torch.device("cuda"), family) is torch.float16
    assert pick_dtype(None, torch.device("cuda"), "sd15") is torch.float16
    assert family_adapter(family).latent_rgb is not None and family_adapter(family).latent_rgb.shape == (16, 3)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_long_prompts_warn_past_the_long_encoders_window(residents, name: str) -> None:
    resident = residents[name]
    window = resident.adapter.sequence_length(resident.model.pipeline)
    # The tiny tokenizers spend about a token per character: 200 characters pass CLIP's 77 but fit the T5 window.
    assert resident.truncation_warnings(GenerateRequest(prompt="a red circle " * 15), "chunk") == []
    warnings = resident.truncation_warnings(GenerateRequest(prompt="x" * (window + 10)), "truncate")
    assert len(warnings) == 1 and f"reads the first {window}" in warnings[0]


@pytest.mark.parametrize("family", ["flux", "sd3", "qwen-image"])
def test_sixteen_channel_projection_adds_the_family_bias(family: str) -> None:
    adapter = family_adapter(family)
    assert adapter.latent_rgb_bias is not None
    latents = torch.zeros(1, 16, 2, 2)
    latents[:, 3] = 1.0  # channel 3 only: its row of the matrix, plus the bias
    pixel = latents_to_image(latents, adapter.latent_rgb, adapter.latent_rgb_bias).getpixel((0, 0))
    rgb = adapter.latent_rgb[3] + adapter.latent_rgb_bias
    assert pixel == tuple(round((float(v) + 1) * 127.5) for v in rgb)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_job_gets_the_same_pixels_alone_as_in_a_batch(residents, name: str) -> None:
    resident = residents[name]
    requests = _requests(FAMILIES[name], Sampler.FLOW_EULER)
    batched = resident.generate(requests).images
    for request, images in zip(requests, batched, strict=True):
        alone = resident.generate([request]).images[0]
        difference = np.abs(np.asarray(alone[0]).astype(int) - np.asarray(images[0]).astype(int)).max()
        assert difference <= 1  # kernels over a batch of two may round one level apart
