"""The family table's rules and the sampler table's families: one source each, consistent with each other and with the
diffusers pipelines they describe."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, get_args

import pytest
from diffusers import FluxPipeline, QwenImagePipeline, StableDiffusion3Pipeline
from pydantic import ValidationError

from core.catalog import ModelEntry
from core.families import FAMILIES, ModelFamily, family_row, family_table_markdown
from core.samplers import FLOW, SD_LINE, Sampler, samplers_for
from core.schemas import FieldError, GenerateRequest, check_family_rules
from core.settings import Settings
from worker.pipeline.samplers import build_scheduler

SD_FAMILIES = [ModelFamily.SD15, ModelFamily.SD2, ModelFamily.SDXL, ModelFamily.TURBO]
FLOW_FAMILIES = [ModelFamily.FLUX, ModelFamily.SD3, ModelFamily.QWEN_IMAGE]
FLOW_SAMPLERS = [Sampler.FLOW_EULER, Sampler.FLOW_HEUN, Sampler.FLOW_DPMPP_2M, Sampler.FLOW_UNIPC]
# FLUX.1-dev's scheduler_config.json: resolution-dependent shift.
FLUX_SCHEDULER_CONFIG = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


def test_family_values_are_the_contract() -> None:
    assert ModelFamily.FLUX == "flux" and ModelFamily.SD3 == "sd3" and ModelFamily.QWEN_IMAGE == "qwen-image"
    # samplers.py spells the family groups (families.py imports it): together they are every family, once.
    assert {family.value for family in ModelFamily} == SD_LINE | FLOW
    assert not SD_LINE & FLOW


@pytest.mark.parametrize("family", SD_FAMILIES)
def test_sd_families_keep_the_sd_samplers(family: ModelFamily) -> None:
    assert samplers_for(family) == [sampler for sampler in Sampler if sampler not in FLOW_SAMPLERS]
    assert FAMILIES[family].capabilities()["samplers"] == [sampler.value for sampler in samplers_for(family)]


# Where diffusers 0.42's pipelines run each flow sampler (the table's comment says why; F's worker measures the same
# on the tiny models).
FLOW_MATRIX = {
    "flux": {"txt2img": ["flow_euler", "flow_dpmpp_2m", "flow_unipc"], "img2img": ["flow_euler"]},
    "sd3": {"txt2img": FLOW_SAMPLERS, "img2img": ["flow_euler", "flow_heun"]},
    "qwen-image": {"txt2img": ["flow_euler", "flow_unipc"], "img2img": ["flow_euler"]},
}


@pytest.mark.parametrize("family", FLOW_FAMILIES)
def test_flow_families_take_only_flow_samplers(family: ModelFamily) -> None:
    assert set(samplers_for(family)) <= set(FLOW_SAMPLERS)
    assert FAMILIES[family].defaults.sampler in FLOW_SAMPLERS
    assert not Sampler.EULER_A.fits(family)
    by_mode = FAMILIES[family].samplers_by_mode()
    assert by_mode == {
        "txt2img": FLOW_MATRIX[family]["txt2img"],
        "img2img": FLOW_MATRIX[family]["img2img"],
        "inpaint": FLOW_MATRIX[family]["img2img"],
    }
    assert [s.value for s in samplers_for(family)] == by_mode["txt2img"]


def test_the_multistep_flow_solvers_run_text_to_image_only() -> None:
    # Flow img2img and inpainting noise the input with scheduler.scale_noise: only the FlowMatch schedulers have it.
    assert Sampler.FLOW_DPMPP_2M.modes == Sampler.FLOW_UNIPC.modes == ("txt2img",)
    assert Sampler.FLOW_EULER.fits("flux", "inpaint") and not Sampler.FLOW_UNIPC.fits("flux", "img2img")
    assert not Sampler.FLOW_HEUN.fits("flux") and not Sampler.FLOW_DPMPP_2M.fits("qwen-image")


def test_every_family_default_sampler_fits_it() -> None:
    for family, row in FAMILIES.items():
        assert row.defaults.sampler.fits(family), family
        assert row.defaults.width % row.size_multiple == 0 and row.defaults.height % row.size_multiple == 0
        assert max(row.defaults.width, row.defaults.height) <= row.max_size


@pytest.mark.parametrize("sampler", FLOW_SAMPLERS)
def test_flow_samplers_build_from_the_flux_config(sampler: Sampler) -> None:
    scheduler = build_scheduler(sampler, FLUX_SCHEDULER_CONFIG)
    assert type(scheduler).__name__ == sampler.scheduler_class
    if sampler in (Sampler.FLOW_DPMPP_2M, Sampler.FLOW_UNIPC):
        # The multistep solvers run on flow sigmas and read the model's output as a velocity.
        assert scheduler.config.use_flow_sigmas
        assert scheduler.config.prediction_type == "flow_prediction"
    if sampler is Sampler.FLOW_EULER:
        assert scheduler.config.use_dynamic_shifting  # FLUX's resolution-dependent shift carries over
    if sampler is Sampler.FLOW_DPMPP_2M:
        assert scheduler.config.algorithm_type == "dpmsolver++" and scheduler.config.solver_order == 2
    takes_mu = "mu" in inspect.signature(scheduler.set_timesteps).parameters
    scheduler.set_timesteps(8, **({"mu": 0.8} if takes_mu else {}))
    assert len(scheduler.timesteps) >= 8


def _bare(cls: type[Any]) -> Any:
    """A pipeline of `cls` with no components: its constants (VAE factor, sample size, tokenizer length) fall back
    to those of the released models."""
    params = inspect.signature(cls.__init__).parameters
    return cls(**{name: None for name, p in params.items() if name != "self" and p.default is inspect.Parameter.empty})


@pytest.mark.parametrize(
    ("family", "pipeline_class", "multiple", "tokens"),
    [
        (ModelFamily.FLUX, FluxPipeline, lambda p: p.vae_scale_factor * 2, lambda p: 512),
        (ModelFamily.SD3, StableDiffusion3Pipeline, lambda p: p.vae_scale_factor * p.patch_size, lambda p: 512),
        (ModelFamily.QWEN_IMAGE, QwenImagePipeline, lambda p: p.vae_scale_factor * 2, lambda p: p.tokenizer_max_length),
    ],
)
def test_flow_rows_match_their_diffusers_pipeline(
    family: ModelFamily, pipeline_class: type[Any], multiple: Any, tokens: Any
) -> None:
    row = FAMILIES[family]
    pipeline = _bare(pipeline_class)
    call = inspect.signature(pipeline_class.__call__).parameters
    assert row.size_multiple == multiple(pipeline) == 16
    assert row.max_prompt_tokens == tokens(pipeline)
    assert row.defaults.steps == call["num_inference_steps"].default
    assert row.defaults.width == row.defaults.height == pipeline.default_sample_size * pipeline.vae_scale_factor
    if family is ModelFamily.QWEN_IMAGE:
        assert row.defaults.true_cfg_scale == call["true_cfg_scale"].default == 4.0
    else:
        assert row.defaults.guidance_scale == call["guidance_scale"].default
    if row.true_cfg:
        assert "true_cfg_scale" in call


def test_rule_columns() -> None:
    flux, sd3, qwen, turbo = (FAMILIES[f] for f in ("flux", "sd3", "qwen-image", "turbo"))
    assert (flux.guidance, flux.negative_prompt, flux.true_cfg) == ("distilled", "true_cfg", True)
    assert (sd3.guidance, sd3.negative_prompt, sd3.true_cfg) == ("cfg", "yes", False)
    assert (qwen.negative_prompt, qwen.true_cfg) == ("true_cfg", True)
    assert (turbo.guidance, turbo.negative_prompt) == ("none", "no")
    for family in SD_FAMILIES:
        assert FAMILIES[family].size_multiple == 8 and FAMILIES[family].max_prompt_tokens == 77


def test_unknown_family_reads_the_sd15_row() -> None:
    assert family_row(None) is FAMILIES[ModelFamily.SD15]
    assert family_row("nonesuch") is FAMILIES[ModelFamily.SD15]
    assert family_row("flux") is FAMILIES[ModelFamily.FLUX]


def test_true_cfg_scale_field() -> None:
    assert GenerateRequest(prompt="a").true_cfg_scale is None
    assert GenerateRequest(prompt="a", true_cfg_scale=4).true_cfg_scale == 4.0
    with pytest.raises(ValidationError):
        GenerateRequest(prompt="a", true_cfg_scale=0.5)


def test_models_file_entry_keeps_its_family_rules() -> None:
    entry = ModelEntry(source="x", family="flux", steps=4, guidance_scale=0.0, modes=["txt2img"])
    assert entry.defaults()["sampler"] is Sampler.FLOW_EULER and entry.defaults()["steps"] == 4
    assert entry.capabilities()["modes"] == ["txt2img"]
    assert ModelEntry(source="x", family="qwen-image").defaults()["true_cfg_scale"] == 4.0
    for bad in (
        {"family": "flux", "width": 1000},
        {"family": "flux", "sampler": "euler_a"},
        {"family": "sd15", "sampler": "flow_euler"},
        {"family": "sd3", "true_cfg_scale": 2.0},
        {"family": "flux", "modes": []},
    ):
        with pytest.raises(ValidationError):
            ModelEntry(source="x", **bad)


def test_docs_show_the_family_table() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    shown = text.split("<!-- family-table:start -->\n", 1)[1].split("<!-- family-table:end -->", 1)[0]
    assert shown == family_table_markdown(), "docs/api.md: paste `python -m core.families` between the markers"


def test_check_family_rules_order_and_max_size() -> None:
    flux = FAMILIES[ModelFamily.FLUX]
    base = {"prompt": "x", "width": 1024, "height": 1024, "sampler": "flow_euler"}
    check_family_rules(GenerateRequest(**base), flux, family="flux")
    # A row with a smaller largest side refuses past it, naming the side.
    narrow = dataclasses.replace(flux, max_size=768)
    with pytest.raises(FieldError) as refused:
        check_family_rules(GenerateRequest(**base), narrow, family="flux")
    assert (refused.value.field, refused.value.type) == ("width", "max_size")
    # The size is checked before the sampler, the mode before the sampler it would run with.
    with pytest.raises(FieldError) as refused:
        check_family_rules(GenerateRequest(**{**base, "width": 1000, "sampler": "euler"}), flux, family="flux")
    assert refused.value.field == "width"
    img2img = GenerateRequest(**{**base, "init_image": "sha256:" + "0" * 64, "sampler": "flow_unipc"})
    with pytest.raises(FieldError) as refused:
        check_family_rules(img2img, flux, family="flux", modes=["txt2img"])
    assert (refused.value.field, refused.value.allowed) == ("init_image", ["txt2img"])
    with pytest.raises(FieldError) as refused:
        check_family_rules(img2img, flux, family="flux")
    assert (refused.value.field, refused.value.allowed) == ("sampler", ["flow_euler"])


def test_the_model_family_setting_takes_every_family() -> None:
    # IMAGEGEN_MODEL_FAMILY spells the families as a Literal (settings import no table): the two agree.
    assert get_args(Settings.model_fields["model_family"].annotation) == tuple(family.value for family in ModelFamily)
