"""The provenance record of the flow families' runs (FLUX, SD3, Qwen-Image): the scheduler each flow sampler runs as,
with the model's own shift settings and the sampler's options, as built for the run and kept through the record's
JSON; the model hash over a transformer's files as over a UNet's. No model is loaded: the schedulers build from the
real models' scheduler configs (worker/pipeline/tiny.py holds them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from core.samplers import Sampler, samplers_for
from core.schemas import Provenance
from worker.pipeline.loading import LoadedModel
from worker.pipeline.provenance import model_fingerprint, provenance
from worker.pipeline.samplers import build_scheduler, denoising_iterations
from worker.pipeline.tiny import FLUX_SCHEDULER_CONFIG, QWEN_IMAGE_SCHEDULER_CONFIG, SD3_SCHEDULER_CONFIG

CONFIGS: dict[str, dict[str, Any]] = {
    "flux": FLUX_SCHEDULER_CONFIG,
    "sd3": SD3_SCHEDULER_CONFIG,
    "qwen-image": QWEN_IMAGE_SCHEDULER_CONFIG,
}
SCHEDULERS = {
    Sampler.FLOW_EULER: "FlowMatchEulerDiscreteScheduler",
    Sampler.FLOW_HEUN: "FlowMatchHeunDiscreteScheduler",
    Sampler.FLOW_DPMPP_2M: "DPMSolverMultistepScheduler",
    Sampler.FLOW_UNIPC: "UniPCMultistepScheduler",
}
# On CUDA the flow families run in bfloat16; the record says so. (Only the device's name is read: no GPU needed.)
MODEL = LoadedModel(pipeline=None, source="/models/flux", device=torch.device("cuda:0"), dtype=torch.bfloat16)  # type: ignore[arg-type]


def _record(family: str, sampler: Sampler) -> Provenance:
    """The record as `ResidentPipeline.admit` makes it: a fresh scheduler, its timesteps set to count iterations."""
    scheduler = build_scheduler(sampler, CONFIGS[family])
    denoising_iterations(scheduler, 4)
    record = provenance(MODEL, family, "0" * 64, scheduler)
    # What `GET /jobs/{id}` shows: the record through its JSON in Redis.
    return Provenance.model_validate_json(record.model_dump_json())


@pytest.mark.parametrize(
    ("family", "sampler"), [(family, sampler) for family in CONFIGS for sampler in samplers_for(family)]
)
def test_each_flow_sampler_records_its_scheduler_and_the_models_shift(family: str, sampler: Sampler) -> None:
    record = _record(family, sampler)
    config = record.scheduler_config
    assert record.scheduler == SCHEDULERS[sampler]
    assert (record.device, record.dtype) == ("cuda:0", "bfloat16")
    model_config = CONFIGS[family]
    # The model's shift settings: FLUX and Qwen-Image shift by the image's size (dynamic), SD3 by a fixed 3.
    assert config.get("use_dynamic_shifting", False) is model_config.get("use_dynamic_shifting", False)
    for key in ("base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len"):
        if key in model_config:
            assert config[key] == model_config[key]
    if sampler in (Sampler.FLOW_DPMPP_2M, Sampler.FLOW_UNIPC):
        # The multistep solvers on flow sigmas, with the model's shift under their name: as built, not the
        # `flow_shift` that a `set_timesteps(mu=...)` leaves on DPM-Solver's config attributes for one call.
        assert (config["use_flow_sigmas"], config["prediction_type"]) == (True, "flow_prediction")
        assert config["flow_shift"] == model_config["shift"]
    else:
        assert config["shift"] == model_config["shift"]
    assert not any(key.startswith("_") for key in config)


def test_an_infinite_config_value_survives_the_records_json() -> None:
    # DPM-Solver's lambda_min_clipped is -inf: JSON has no infinity, so the record keeps its name (null otherwise).
    config = _record("flux", Sampler.FLOW_DPMPP_2M).scheduler_config
    assert config["lambda_min_clipped"] == "-inf"
    assert float(config["lambda_min_clipped"]) == -math.inf
    assert config["algorithm_type"] == "dpmsolver++" and config["solver_order"] == 2


def _flow_model(root: Path, transformer: bytes) -> Path:
    """A diffusers folder laid out as FLUX's: a transformer (no UNet), two text encoders, a VAE."""
    for name, data in {
        "model_index.json": b'{"_class_name": "FluxPipeline"}',
        "transformer/diffusion_pytorch_model.safetensors": transformer,
        "text_encoder/model.safetensors": b"clip",
        "text_encoder_2/model.safetensors": b"t5",
        "vae/diffusion_pytorch_model.safetensors": b"vae",
        "scheduler/scheduler_config.json": b"{}",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_the_model_hash_covers_the_transformer(tmp_path: Path) -> None:
    one = model_fingerprint(str(_flow_model(tmp_path / "one", b"weights")))
    same = model_fingerprint(str(_flow_model(tmp_path / "same", b"weights")))
    other = model_fingerprint(str(_flow_model(tmp_path / "other", b"weightz")))
    assert one == same and len(one) == 64
    assert other != one
