"""The shared contract: seeds, limits, statuses and model names."""

from __future__ import annotations

import pytest

from core import keys
from core.schemas import GenerateRequest, JobStatus, LimitExceededError, check_limits
from core.settings import Settings


def test_image_seeds_are_consecutive_and_wrap() -> None:
    assert GenerateRequest(prompt="x", seed=7, num_images=3).image_seeds() == [7, 8, 9]
    assert GenerateRequest(prompt="x", seed=2**32 - 1, num_images=2).image_seeds() == [2**32 - 1, 0]


def test_image_seeds_need_an_assigned_seed() -> None:
    with pytest.raises(ValueError, match="assigned"):
        GenerateRequest(prompt="x").image_seeds()


def test_check_limits() -> None:
    check_limits(GenerateRequest(prompt="x", width=512, height=512), max_pixels=512 * 512)
    with pytest.raises(LimitExceededError) as info:
        check_limits(GenerateRequest(prompt="x", width=512, height=520), max_pixels=512 * 512)
    assert info.value.field == "width*height"
    assert "262144" in info.value.message


def test_terminal_statuses() -> None:
    terminal = [s for s in JobStatus if s.is_terminal()]
    assert terminal == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED]


def test_request_round_trips_as_json() -> None:
    request = GenerateRequest(prompt="a cat", negative_prompt="dog", seed=3, sampler="ddim", output_format="webp")
    assert GenerateRequest.model_validate(request.model_dump(mode="json")) == request


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("tiny", "tiny"),
        ("runwayml/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"),
        ("/models/dreamshaper_8.safetensors", "dreamshaper_8"),
        ("./checkpoints/my-sd15", "my-sd15"),
    ],
)
def test_served_model_name(model: str, name: str) -> None:
    assert Settings(model=model).served_model_name() == name
    assert Settings(model=model, model_name="custom").served_model_name() == "custom"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_MAX_PIXELS", "4096")
    monkeypatch.setenv("IMAGEGEN_MODEL", "demo")
    settings = Settings()
    assert settings.max_pixels == 4096
    assert settings.model == "demo"


def test_every_key_is_namespaced() -> None:
    built = [keys.job_key("a"), keys.job_image_key("a", 0), keys.job_events_key("a"), keys.worker_key("w")]
    assert all(key.startswith("imagegen:") for key in [*built, keys.workers_key()])
    assert len(set(built)) == len(built)
