"""The family adapter table: every family has its adapter, a loaded pipeline's family comes from its class (else its
VAE), `tiny` and `demo` are sd15 and `demo-flow` is flux."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from core.families import ModelFamily
from core.settings import Settings
from worker.pipeline.families import (
    FAMILY_ADAPTERS,
    StableDiffusionAdapter,
    StableDiffusionXLAdapter,
    detect_family,
    family_adapter,
    family_by_vae,
)
from worker.pipeline.loading import DEMO_FLOW_MODEL_DIR, DEMO_MODEL_DIR
from worker.pipeline.resident import ResidentPipeline


def _bare(pipeline_class: type) -> object:
    """An instance of a pipeline class without components: detection by class needs none."""
    return object.__new__(pipeline_class)


def test_every_family_has_an_adapter() -> None:
    assert set(FAMILY_ADAPTERS) == {family.value for family in ModelFamily}
    assert isinstance(family_adapter("sd15"), StableDiffusionAdapter)
    assert isinstance(family_adapter("sd2"), StableDiffusionAdapter)
    assert isinstance(family_adapter("sdxl"), StableDiffusionXLAdapter)
    assert isinstance(family_adapter("turbo"), StableDiffusionXLAdapter)


def test_single_files_load_with_their_familys_class() -> None:
    assert family_adapter("sd15").pipeline_class is StableDiffusionPipeline
    assert family_adapter("sd2").pipeline_class is StableDiffusionPipeline
    assert family_adapter("sdxl").pipeline_class is StableDiffusionXLPipeline
    assert family_adapter("turbo").pipeline_class is StableDiffusionXLPipeline


def test_family_is_detected_from_the_pipeline_class() -> None:
    assert detect_family(_bare(StableDiffusionXLPipeline)) == "sdxl"
    assert detect_family(_bare(StableDiffusionPipeline)) == "sd15"
    # A hub id or folder gets the default declared family (sd15); its class overrules it.
    assert detect_family(_bare(StableDiffusionXLPipeline), declared="sd15") == "sdxl"
    # A declared family whose class fits stands: turbo and sd2 are not told apart by class.
    assert detect_family(_bare(StableDiffusionXLPipeline), declared="turbo") == "turbo"
    assert detect_family(_bare(StableDiffusionPipeline), declared="sd2") == "sd2"
    assert detect_family(_bare(StableDiffusionPipeline), declared="turbo") == "sd15"  # SD-Turbo is SD 2.1's kind


def test_other_pipelines_fall_back_to_their_vae() -> None:
    def with_vae(scaling_factor: float, latent_channels: int) -> object:
        config = SimpleNamespace(scaling_factor=scaling_factor, latent_channels=latent_channels)
        return SimpleNamespace(vae=SimpleNamespace(config=config))

    assert family_by_vae(0.18215, 4) == "sd15"
    assert family_by_vae(0.13025, 4) == "sdxl"
    assert family_by_vae(1.0, 16) is None
    assert detect_family(with_vae(0.13025, 4)) == "sdxl"
    assert detect_family(with_vae(0.18215, 4)) == "sd15"
    assert detect_family(with_vae(1.0, 16)) is None
    assert detect_family(SimpleNamespace()) is None
    assert family_adapter(None).latent_rgb is None  # previews stretch the channels of an unknown family


def test_families_differ_where_they_should() -> None:
    sd, sdxl = family_adapter("sd15"), family_adapter("sdxl")
    assert sd.latent_rgb is not None and sdxl.latent_rgb is not None
    assert sd.latent_rgb.shape == sdxl.latent_rgb.shape == (4, 3)
    assert not sd.latent_rgb.equal(sdxl.latent_rgb)
    one_encoder = SimpleNamespace(tokenizer=object(), tokenizer_2=None)
    two_encoders = SimpleNamespace(tokenizer=object(), tokenizer_2=object())
    assert sd.chunks_long_prompts(one_encoder)
    assert not sd.chunks_long_prompts(SimpleNamespace(tokenizer=None))
    assert not sdxl.chunks_long_prompts(two_encoders)


def test_tiny_is_sd15(cache_dir) -> None:
    resident = ResidentPipeline.load(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))
    assert resident.family == "sd15"
    assert resident.adapter is FAMILY_ADAPTERS["sd15"]


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "model_index.json").exists(), reason="demo weights not in the package")
def test_demo_is_sd15(cache_dir) -> None:
    resident = ResidentPipeline.load(Settings(model="demo", cache_dir=cache_dir, device="cpu"))
    assert resident.family == "sd15"


@pytest.mark.skipif(not (DEMO_FLOW_MODEL_DIR / "model_index.json").exists(), reason="demo-flow not in the package")
def test_demo_flow_loads_as_flux(cache_dir) -> None:
    resident = ResidentPipeline.load(Settings(model="demo-flow", cache_dir=cache_dir, device="cpu"))
    assert resident.family == "flux"
    assert resident.adapter is FAMILY_ADAPTERS["flux"]
    # The worker reads prompts at the length the model was trained at (its T5 tokenizer's window), not FLUX's 512.
    assert resident.adapter.sequence_length(resident.model.pipeline) == 16
