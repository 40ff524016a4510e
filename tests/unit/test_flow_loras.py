"""LoRA on the rectified-flow families (FLUX, SD3, Qwen-Image) through diffusers' own loaders, on their tiny models
built in code: a job with an adapter gets other pixels, and a plain job after it gets exactly the pixels of the plain
job before (the adapter is on for its batch only); a file made for another family, or a model whose pipeline has no
LoRA loader, is refused plainly and leaves the model as it was (CPU, 64x64, 2 steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.pipelines.auto_pipeline import (
    AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
    AUTO_INPAINT_PIPELINES_MAPPING,
    AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
)

from core.schemas import GenerateRequest, LoraSpec, Sampler
from core.settings import Settings
from tests.lora_files import write_random_lora, write_random_transformer_lora
from worker.pipeline.families import FAMILY_ADAPTERS, family_adapter
from worker.pipeline.loading import load_model
from worker.pipeline.loras import LoraAdapters
from worker.pipeline.resident import ResidentPipeline
from worker.pipeline.tiny import ensure_tiny_model

FAMILIES = {"tiny-flux": "flux", "tiny-sd3": "sd3", "tiny-qwen-image": "qwen-image"}
# Each family's guidance without true CFG (one transformer pass per step where the family allows it).
GUIDANCE: dict[str, dict[str, Any]] = {
    "flux": {"guidance_scale": 3.5},
    "sd3": {"guidance_scale": 5.0},
    "qwen-image": {"guidance_scale": 1.0},
}
SIDE = 64


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A LoRA folder with one random transformer adapter per flow family and one SD UNet adapter."""
    folder = tmp_path_factory.mktemp("flow-loras")
    for name in FAMILIES:
        write_random_transformer_lora(str(ensure_tiny_model(name, cache_dir)), folder, f"{name}-style", seed=1)
    write_random_lora(str(ensure_tiny_model("tiny", cache_dir)), folder, "sd-unet", seed=2)
    return folder


@pytest.mark.parametrize("name", list(FAMILIES))
def test_lora_changes_its_job_and_switches_off_after(cache_dir: Path, lora_dir: Path, name: str) -> None:
    family = FAMILIES[name]
    resident = ResidentPipeline(
        load_model(Settings(model=name, cache_dir=cache_dir, device="cpu")), family=family, lora_dir=lora_dir
    )
    plain = GenerateRequest(
        prompt="a red circle", width=SIDE, height=SIDE, steps=2, seed=5, sampler=Sampler.FLOW_EULER, **GUIDANCE[family]
    )

    def pixels(request: GenerateRequest) -> np.ndarray:
        resident.admit(request, name)  # admission checks the adapters as the worker does
        return np.asarray(resident.generate([request]).images[0][0]).astype(int)

    def with_lora(adapter: str, scale: float) -> GenerateRequest:
        return plain.model_copy(update={"loras": [LoraSpec(name=adapter, scale=scale)]})

    before = pixels(plain)
    styled = pixels(with_lora(f"{name}-style", 1.0))
    half = pixels(with_lora(f"{name}-style", 0.5))
    after = pixels(plain)
    # Loaded by the family's own diffusers loader, into the transformer.
    pipeline: Any = resident.model.pipeline
    assert isinstance(pipeline, family_adapter(family).lora_loader)
    assert pipeline.get_list_adapters() == {"transformer": [f"{name}-style"]}
    assert np.abs(styled - before).max() > 10
    assert np.abs(half - styled).max() > 0  # the scale reaches the adapter
    assert np.array_equal(after, before)  # off after its batch: exactly the pixels of before any LoRA

    # A UNet LoRA for the SD line holds nothing a transformer loader takes: the job fails saying so, nothing changes.
    with pytest.raises(ValueError, match=r"sd-unet\.safetensors holds no weights .* another model family"):
        resident.generate([with_lora("sd-unet", 1.0)])
    assert pipeline.get_list_adapters() == {"transformer": [f"{name}-style"]}
    assert np.array_equal(pixels(plain), before)


def test_each_family_names_the_loader_its_pipelines_inherit() -> None:
    for family, adapter in FAMILY_ADAPTERS.items():
        assert adapter.lora_loader is not None, family
        # The img2img and inpainting variants (`from_pipe` over the same modules) take the same LoRA files.
        kinds = {kind for kind, cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.items() if cls is adapter.pipeline_class}
        assert kinds, family
        variants = [
            mapping[kind]
            for mapping in (AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, AUTO_INPAINT_PIPELINES_MAPPING)
            for kind in kinds
            if kind in mapping
        ]
        for cls in [adapter.pipeline_class, *variants]:
            assert issubclass(cls, adapter.lora_loader), (family, cls.__name__)


def test_a_pipeline_without_a_lora_loader_refuses_adapters_at_admission(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8,),
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        norm_num_groups=8,
    )
    pipeline = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())  # a real diffusers pipeline with no LoRA loader
    (tmp_path / "style.safetensors").write_bytes(b"")
    adapters = LoraAdapters(pipeline, tmp_path)
    assert not adapters.supported
    adapters.check([])  # jobs without adapters run as ever
    with pytest.raises(ValueError, match=r"^loras: this model \(DDPMPipeline\) takes no LoRA adapters"):
        adapters.check([LoraSpec(name="style")])
