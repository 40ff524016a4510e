"""Each family's rules at the API: a models file with one entry per family; the API applies the model's defaults, then
refuses what the family cannot do with a 422 naming the field, and `GET /models` shows each model's capabilities.
No worker: the API queues for absent workers (IMAGEGEN_QUEUE_WITHOUT_WORKERS)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from core.catalog import with_served_model
from core.families import FAMILIES
from core.queueing import model_queue
from core.settings import Settings
from service.app import create_app

MODELS_TOML = """
[models.sd15]
source = "tiny"
family = "sd15"

[models.turbo]
source = "tiny"
family = "turbo"

[models.flux]
source = "black-forest-labs/FLUX.1-dev"
family = "flux"

[models.flux-schnell]
source = "black-forest-labs/FLUX.1-schnell"
family = "flux"
steps = 4
guidance_scale = 0.0
modes = ["txt2img", "img2img"]

[models.sd3]
source = "stabilityai/stable-diffusion-3.5-large"
family = "sd3"
guidance_scale = 4.0

[models.qwen]
source = "Qwen/Qwen-Image"
family = "qwen-image"
"""
FLOW_SAMPLERS = ["flow_euler", "flow_heun", "flow_dpmpp_2m", "flow_unipc"]
FLUX_SAMPLERS = ["flow_euler", "flow_dpmpp_2m", "flow_unipc"]


@pytest.fixture
def client(settings: Settings, redis_client: Redis, tmp_path: Path) -> TestClient:
    path = tmp_path / "models.toml"
    path.write_text(MODELS_TOML)
    return TestClient(create_app(settings.model_copy(update={"models_file": path})), raise_server_exceptions=False)


def _png(size: int = 64, mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _refused(client: TestClient, redis: Redis, body: dict[str, Any], field: str) -> dict[str, Any]:
    """The detail of a 422 that names `field`, after checking nothing was queued."""
    response = client.post("/generate", json={"prompt": "a red square", **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [detail["field"] for detail in error["details"]] == [field], error
    assert error["message"].startswith(f"{field}: "), error
    assert model_queue(redis, body["model"]).count == 0
    return error["details"][0] | {"text": error["message"]}


def _accepted(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/generate", json={"prompt": "a red square", **body})
    assert response.status_code == 202, response.text
    request: dict[str, Any] = response.json()["request"]
    return request


def test_each_family_gets_its_defaults(client: TestClient) -> None:
    flux = _accepted(client, {"model": "flux"})
    assert (flux["width"], flux["height"], flux["steps"], flux["sampler"]) == (1024, 1024, 28, "flow_euler")
    assert (flux["guidance_scale"], flux["true_cfg_scale"]) == (3.5, None)
    schnell = _accepted(client, {"model": "flux-schnell"})
    assert (schnell["steps"], schnell["guidance_scale"], schnell["sampler"]) == (4, 0.0, "flow_euler")
    sd3 = _accepted(client, {"model": "sd3"})
    assert (sd3["steps"], sd3["guidance_scale"], sd3["sampler"], sd3["true_cfg_scale"]) == (28, 4.0, "flow_euler", None)
    qwen = _accepted(client, {"model": "qwen", "negative_prompt": "blurry"})  # true CFG is on by default
    assert (qwen["steps"], qwen["true_cfg_scale"], qwen["sampler"], qwen["width"]) == (50, 4.0, "flow_euler", 1024)
    sd15 = _accepted(client, {"model": "sd15", "negative_prompt": "blurry"})
    assert (sd15["sampler"], sd15["true_cfg_scale"]) == ("euler_a", None)


def test_sides_must_be_multiples_of_the_familys_step(client: TestClient, redis_client: Redis) -> None:
    for model in ("flux", "sd3", "qwen"):
        detail = _refused(client, redis_client, {"model": model, "width": 1000, "height": 1024}, "width")
        assert "multiple of 16" in detail["text"] and detail["type"] == "size_multiple"
        assert _refused(client, redis_client, {"model": model, "width": 512, "height": 520}, "height")
    # 1000 is a multiple of the SD line's 8.
    assert _accepted(client, {"model": "sd15", "width": 1000, "height": 512})["width"] == 1000
    assert _accepted(client, {"model": "flux", "width": 512, "height": 768})["height"] == 768


def test_a_sampler_must_fit_the_family(client: TestClient, redis_client: Redis) -> None:
    detail = _refused(client, redis_client, {"model": "flux", "sampler": "euler_a"}, "sampler")
    assert detail["allowed"] == FLUX_SAMPLERS and detail["type"] == "sampler_unsupported"
    assert "flow_euler" in detail["text"]
    # FLUX's pipeline passes its own sigmas, which FlowMatchHeun does not take.
    assert (
        _refused(client, redis_client, {"model": "flux", "sampler": "flow_heun"}, "sampler")["allowed"] == FLUX_SAMPLERS
    )
    # The multistep solvers cannot noise an input image: text-to-image only, on every flow family.
    img2img = {"model": "sd3", "init_image": _png(), "width": 64, "height": 64, "sampler": "flow_unipc"}
    detail = _refused(client, redis_client, img2img, "sampler")
    assert detail["allowed"] == ["flow_euler", "flow_heun"] and "img2img" in detail["text"]
    assert _accepted(client, {**img2img, "sampler": "flow_heun"})["sampler"] == "flow_heun"
    detail = _refused(client, redis_client, {"model": "sd15", "sampler": "flow_euler"}, "sampler")
    assert "euler_a" in detail["allowed"] and "flow_euler" not in detail["allowed"]
    for sampler in FLOW_SAMPLERS:
        assert _accepted(client, {"model": "sd3", "sampler": sampler})["sampler"] == sampler


def test_negative_prompts_follow_the_family(client: TestClient, redis_client: Redis) -> None:
    # FLUX: distilled guidance, so a negative prompt needs true CFG.
    detail = _refused(client, redis_client, {"model": "flux", "negative_prompt": "blurry"}, "negative_prompt")
    assert "true_cfg_scale > 1" in detail["text"] and detail["type"] == "negative_prompt_needs_true_cfg"
    assert _refused(
        client, redis_client, {"model": "flux", "negative_prompt": "blurry", "true_cfg_scale": 1.0}, "negative_prompt"
    )
    assert _accepted(client, {"model": "flux", "negative_prompt": "blurry", "true_cfg_scale": 4})["true_cfg_scale"] == 4
    # Qwen-Image: true CFG by default (4.0); turned off, its negative prompt is refused too.
    body = {"model": "qwen", "negative_prompt": "blurry", "true_cfg_scale": 1.0}
    assert _refused(client, redis_client, body, "negative_prompt")
    # Turbo runs without guidance: no negative prompt at all (an empty one is no negative prompt).
    detail = _refused(client, redis_client, {"model": "turbo", "negative_prompt": "blurry"}, "negative_prompt")
    assert detail["type"] == "negative_prompt_unsupported"
    assert _accepted(client, {"model": "turbo", "negative_prompt": " "})["negative_prompt"] == " "
    assert _accepted(client, {"model": "sd3", "negative_prompt": "blurry"})["negative_prompt"] == "blurry"


def test_true_cfg_scale_only_where_the_family_has_it(client: TestClient, redis_client: Redis) -> None:
    for model in ("sd15", "sd3", "turbo"):
        detail = _refused(client, redis_client, {"model": model, "true_cfg_scale": 3.0}, "true_cfg_scale")
        assert detail["type"] == "true_cfg_unsupported"
    assert _accepted(client, {"model": "flux", "true_cfg_scale": 3.0})["true_cfg_scale"] == 3.0


def test_a_mode_the_model_lacks_is_refused(client: TestClient, redis_client: Redis) -> None:
    inpaint = {"model": "flux-schnell", "image": _png(), "mask_image": _png(mode="L"), "width": 64, "height": 64}
    detail = _refused(client, redis_client, inpaint, "image")
    assert detail["type"] == "mode_unsupported" and detail["allowed"] == ["txt2img", "img2img"]
    assert "inpaint" in detail["text"]
    img2img = {"model": "flux-schnell", "init_image": _png(), "width": 64, "height": 64}
    assert _accepted(client, img2img)["init_image"].startswith("sha256:")
    assert _accepted(client, {**inpaint, "model": "flux"})["image"].startswith("sha256:")


def test_an_input_images_size_is_fitted_to_the_familys_step(client: TestClient, redis_client: Redis) -> None:
    # A 200x200 input and no size given: the job's size is the image's rounded down to the model's step (200 is a
    # multiple of 8, not of 16); a size the client gives is checked as given.
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), 255).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    assert _refused(client, redis_client, {"model": "flux", "init_image": image, "width": 200}, "width")
    flux = _accepted(client, {"model": "flux", "init_image": image})
    assert (flux["width"], flux["height"]) == (192, 192)
    assert (_accepted(client, {"model": "sd15", "init_image": image})["width"]) == 200


def test_a_long_prompt_is_not_refused(client: TestClient) -> None:
    # Past every family's max_prompt_tokens: the worker truncates (or chunks) and warns; the API takes it.
    prompt = " ".join(["a red square on a blue background"] * 50)  # ~350 tokens, within the 2000 characters
    for model in ("sd15", "flux"):
        assert _accepted(client, {"model": model, "prompt": prompt})["prompt"] == prompt


def test_models_show_capabilities(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    models = {model["name"]: model for model in response.json()}
    flux = models["flux"]["capabilities"]
    assert flux == {
        "modes": ["txt2img", "img2img", "inpaint"],
        "samplers": FLUX_SAMPLERS,
        "samplers_by_mode": {"txt2img": FLUX_SAMPLERS, "img2img": ["flow_euler"], "inpaint": ["flow_euler"]},
        "negative_prompt": "true_cfg",
        "guidance": "distilled",
        "true_cfg": True,
        "size_multiple": 16,
        "max_prompt_tokens": 512,
        "default_size": [1024, 1024],
        "max_size": 2048,
    }
    assert models["flux-schnell"]["capabilities"]["modes"] == ["txt2img", "img2img"]
    assert list(models["flux-schnell"]["capabilities"]["samplers_by_mode"]) == ["txt2img", "img2img"]
    assert models["sd3"]["capabilities"]["samplers"] == FLOW_SAMPLERS
    assert (models["sd3"]["capabilities"]["negative_prompt"], models["sd3"]["capabilities"]["guidance"]) == (
        "yes",
        "cfg",
    )
    assert models["qwen"]["capabilities"]["max_prompt_tokens"] == 1024
    turbo = models["turbo"]["capabilities"]
    assert (turbo["guidance"], turbo["negative_prompt"], turbo["size_multiple"]) == ("none", "no", 8)
    # The default model (tiny, an sd15 entry) has its own default size; samplers come from the one table.
    tiny = models["tiny"]["capabilities"]
    assert tiny["samplers"] == [sampler.value for sampler in FAMILIES["sd15"].samplers]
    assert tiny["default_size"] == [models["tiny"]["defaults"]["width"], models["tiny"]["defaults"]["height"]]


def test_openai_route_checks_the_familys_size_step(client: TestClient, redis_client: Redis) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "x", "model": "flux", "size": "1000x1000"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "size" and "multiple of 16" in error["message"], error
    assert model_queue(redis_client, "flux").count == 0


def test_the_default_model_takes_its_declared_family(settings: Settings, redis_client: Redis) -> None:
    # IMAGEGEN_MODEL as a hub id with IMAGEGEN_MODEL_FAMILY: the API applies that family's rules and defaults.
    configured = settings.model_copy(update={"model": "black-forest-labs/FLUX.1-dev", "model_family": "flux"})
    client = TestClient(create_app(configured), raise_server_exceptions=False)
    request = _accepted(client, {})
    assert (request["sampler"], request["width"], request["guidance_scale"]) == ("flow_euler", 1024, 3.5)
    refused = client.post("/generate", json={"prompt": "x", "sampler": "euler"})
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "sampler"


@pytest.mark.parametrize(
    ("model", "family"), [("tiny-flux", "flux"), ("tiny-sd3", "sd3"), ("tiny-qwen-image", "qwen-image")]
)
def test_the_tiny_flow_models_keep_their_familys_rules(
    settings: Settings, redis_client: Redis, model: str, family: str
) -> None:
    # IMAGEGEN_MODEL=tiny-flux (a built-in entry): the API and the worker both take it as a flux model.
    configured = settings.model_copy(update={"model": model})
    listed = TestClient(create_app(configured)).get("/models").json()
    assert [(m["name"], m["family"]) for m in listed] == [(model, family)]
    assert listed[0]["capabilities"]["samplers"] == [s.value for s in FAMILIES[family].samplers]
    assert set(listed[0]["capabilities"]["samplers"]) <= set(FLOW_SAMPLERS)
    assert with_served_model(configured).model_family == family
