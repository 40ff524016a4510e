"""The shared contract: seeds, limits, statuses, model names, and the request fields' bounds and defaults."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from core import keys
from core.catalog import ModelEntry
from core.families import DEFAULT_FAMILY, DEFAULT_FIELDS, FAMILIES
from core.schemas import GenerateRequest, JobStatus, LimitExceededError, Sampler, check_limits
from core.settings import Settings
from service.openai_compat import generate_request as openai_to_generate_request
from service.routes.openai_images import ImagesGenerationRequest


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


def test_a_request_defaults_to_the_default_familys_values() -> None:
    request = GenerateRequest(prompt="x")
    assert {name: getattr(request, name) for name in DEFAULT_FIELDS} == FAMILIES[DEFAULT_FAMILY].defaults.as_dict()
    assert (request.width, request.height, request.steps, request.guidance_scale, request.sampler) == (
        512,
        512,
        25,
        7.5,
        Sampler.EULER_A,
    )


def _bounds(model: type[BaseModel], name: str) -> dict:
    """The value bounds of one field of `model`'s JSON schema, its null branch left out."""
    schema = model.model_json_schema()["properties"][name]
    (value,) = [branch for branch in schema.get("anyOf", [schema]) if branch.get("type") != "null"]
    return {key: bound for key, bound in value.items() if key not in ("title", "default", "description")}


@pytest.mark.parametrize(
    ("model", "name", "request_name"),
    [
        (ModelEntry, "width", "width"),
        (ModelEntry, "height", "height"),
        (ModelEntry, "steps", "steps"),
        (ModelEntry, "guidance_scale", "guidance_scale"),
        (ImagesGenerationRequest, "prompt", "prompt"),
        (ImagesGenerationRequest, "n", "num_images"),
    ],
)
def test_the_models_file_and_openai_request_share_the_request_bounds(
    model: type[BaseModel], name: str, request_name: str
) -> None:
    assert _bounds(model, name) == _bounds(GenerateRequest, request_name)


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("steps", 151, "less than or equal to 150"),
        ("guidance_scale", 31, "less than or equal to 30"),
        ("width", 100, "multiple of 8"),
        ("height", 32, "greater than or equal to 64"),
    ],
)
def test_a_models_file_default_the_request_would_refuse_is_refused(field: str, value: int, text: str) -> None:
    with pytest.raises(ValidationError, match=text):
        ModelEntry(source="tiny", **{field: value})


def test_the_openai_request_refuses_what_generate_refuses() -> None:
    with pytest.raises(ValidationError, match="at least 1 character"):
        ImagesGenerationRequest(prompt="")
    with pytest.raises(ValidationError, match="less than or equal to 8"):
        ImagesGenerationRequest(prompt="x", n=9)
    # Without a size (or with `auto`) the job takes its model's default size: width and height stay unset.
    for size in (None, "auto"):
        request = openai_to_generate_request(ImagesGenerationRequest(prompt="x", size=size), Settings())
        assert not {"width", "height"} & request.model_fields_set
