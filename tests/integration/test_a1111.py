"""The AUTOMATIC1111-compatible routes in process, on the real Redis, with no worker: the `webuiapi` client's full
payload mapped onto a queued job, refusals in A1111's error shape, options per API key, progress, interrupt and
skip of a queued job, samplers and png-info. Generation itself: tests/e2e/test_a1111_compat.py."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from redis import Redis

from core import keys
from core.jobs import JobStore
from core.settings import Settings
from service.app import create_app
from service.auth import hash_key
from tests.conftest import api_server
from tests.e2e.processes import wait_until
from worker.encoding import a1111_parameters, encode_image

MODELS = """
[models.circles]
source = "tiny"

[models.squares]
source = "tiny"

[models.flux]
source = "tiny-flux"
family = "flux"
"""
A1111_ERROR_KEYS = {"error", "detail", "body", "errors"}


@pytest.fixture
def a1111_settings(settings: Settings, tmp_path: Path) -> Settings:
    (tmp_path / "models.toml").write_text(MODELS)
    return settings.model_copy(update={"models_file": tmp_path / "models.toml", "model": "circles"})


@pytest.fixture
def client(a1111_settings: Settings, redis_client: Redis) -> TestClient:
    return TestClient(create_app(a1111_settings), raise_server_exceptions=False)


@pytest.fixture
def api_url(a1111_settings: Settings, redis_client: Redis) -> Iterator[str]:
    """A real API server on a free loopback port (in a thread of this process), for the `webuiapi` client."""
    with api_server(a1111_settings) as url:
        yield url


def _current_job(store: JobStore, redis_client: Redis) -> Any:
    job_id = wait_until(lambda: redis_client.get(keys.a1111_current_job_key("anonymous")), 20, "the A1111 job")
    return store.get(job_id.decode())


def _a1111_error(response: httpx.Response, field: str) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == A1111_ERROR_KEYS and body["errors"][0]["field"] == field, body
    assert body["detail"].startswith(f"{field}: ")
    return str(body["detail"])


def test_webuiapi_payload_maps_onto_a_queued_job_and_interrupt_ends_the_call(
    api_url: str, store: JobStore, redis_client: Redis
) -> None:
    port = int(api_url.rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    outcome: dict[str, Any] = {}

    def generate() -> None:
        # Every other field as webuiapi sends it: at its A1111 default, accepted and ignored.
        outcome["result"] = api.txt2img(
            prompt="a red circle <lora:colour-swap:0.5>",
            negative_prompt="blurry",
            batch_size=2,
            n_iter=2,
            steps=7,
            cfg_scale=5,
            width=64,
            height=72,
            sampler_name="DPM++ 2M",
            scheduler="karras",
            override_settings={"sd_model_checkpoint": "squares"},
        )

    caller = threading.Thread(target=generate)
    caller.start()
    try:
        job = _current_job(store, redis_client)
        request = job.request
        assert (job.model, request.prompt, request.negative_prompt) == ("squares", "a red circle", "blurry")
        assert [(lora.name, lora.scale) for lora in request.loras] == [("colour-swap", 0.5)]
        assert (request.num_images, request.steps, request.guidance_scale) == (4, 7, 5.0)
        assert (request.width, request.height, request.sampler.value) == (64, 72, "dpmpp_2m_karras")
        assert request.preview_every == 10 and request.seed == job.seed
        progress = httpx.get(f"{api_url}/sdapi/v1/progress").json()
        assert progress["state"]["job_count"] == 1 and progress["progress"] == 0
        assert "queue" in progress["textinfo"]
        assert api.interrupt() == {}
    finally:
        caller.join(timeout=30)
    result = outcome["result"]
    assert result.images == [] and result.info["interrupted"] is True
    assert result.info["all_seeds"] == [job.seed + i for i in range(4)]
    assert result.info["sampler_name"] == "DPM++ 2M Karras" and result.info["sd_model_name"] == "squares"
    assert result.parameters["prompt"] == "a red circle <lora:colour-swap:0.5>"
    assert store.get(job.id).status.value == "canceled"
    assert httpx.get(f"{api_url}/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_skip_ends_a_queued_img2img_call_like_interrupt(api_url: str, store: JobStore, redis_client: Redis) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    body = {"prompt": "x", "init_images": [f"data:image/png;base64,{image}"], "mask": image, "steps": 4}
    outcome: dict[str, Any] = {}

    def generate() -> None:
        outcome["response"] = httpx.post(f"{api_url}/sdapi/v1/img2img", json=body, timeout=30)

    caller = threading.Thread(target=generate)
    caller.start()
    try:
        job = _current_job(store, redis_client)
        assert job.request.mode.value == "inpaint" and job.request.strength == 0.75
        assert (job.request.width, job.request.height) == (512, 512)  # A1111's default size: the image is resized
        assert httpx.post(f"{api_url}/sdapi/v1/skip").json() is None
    finally:
        caller.join(timeout=30)
    response = outcome["response"]
    assert response.status_code == 200
    assert response.json()["images"] == [] and json.loads(response.json()["info"])["interrupted"] is True
    assert response.json()["parameters"]["init_images"] is None  # include_init_images is false


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"enable_hr": True}, "enable_hr", "hires. fix"),
        ({"restore_faces": True}, "restore_faces", "face restoration"),
        ({"alwayson_scripts": {"ControlNet": {"args": []}}}, "alwayson_scripts", "always-on scripts"),
        ({"styles": ["cinematic"]}, "styles", "styles"),
        ({"subseed_strength": 0.3}, "subseed_strength", "variation seeds"),
        ({"save_images": True}, "save_images", "not saved to disk"),
        ({"script_name": "x/y/z plot"}, "script_name", "scripts"),
        ({"batch_size": 4, "n_iter": 3}, "batch_size*n_iter", "at most 8"),
        ({"sampler_name": "DPM++ SDE"}, "sampler_name", "Euler a"),
        ({"sampler_name": "Euler", "scheduler": "exponential"}, "scheduler", "karras"),
        ({"cfg_scale": 40}, "cfg_scale", "30"),
        ({"width": 100}, "width", "multiple of 8"),
        ({"override_settings": {"sd_model_checkpoint": "nope"}}, "override_settings.sd_model_checkpoint", "squares"),
        ({"override_settings": {"CLIP_stop_at_last_layers": 2}}, "override_settings.CLIP_stop_at_last_layers", "set"),
        ({"controlnet_units": []}, "controlnet_units", "not permitted"),
        ({"prompt": ""}, "prompt", "at least 1"),
    ],
)
def test_what_cannot_be_honoured_is_a_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, says: str
) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, **body})
    assert says in _a1111_error(response, field)


def test_img2img_refusals_name_a1111_fields(client: TestClient) -> None:
    assert "init image" in _a1111_error(client.post("/sdapi/v1/img2img", json={"prompt": "x"}), "init_images")
    two = {"prompt": "x", "init_images": ["a", "b"]}
    assert "one init image" in _a1111_error(client.post("/sdapi/v1/img2img", json=two), "init_images")
    weak = {"prompt": "x", "init_images": ["a"], "steps": 2, "denoising_strength": 0.2}
    assert "runs no step" in _a1111_error(client.post("/sdapi/v1/img2img", json=weak), "denoising_strength")
    inverted = {"prompt": "x", "init_images": ["a"], "mask": "b", "inpainting_mask_invert": 1}
    _a1111_error(client.post("/sdapi/v1/img2img", json=inverted), "inpainting_mask_invert")


def test_flux_sampler_names_and_sizes_follow_its_family(client: TestClient) -> None:
    # An A1111 sampler name means its family's row: Euler a has no flow-matching row.
    body = {"prompt": "x", "width": 64, "height": 64, "override_settings": {"sd_model_checkpoint": "flux"}}
    euler_a = {**body, "sampler_name": "Euler a"}
    assert "Euler" in _a1111_error(client.post("/sdapi/v1/txt2img", json=euler_a), "sampler_name")
    too_small = {**body, "sampler_name": "Euler", "width": 72}
    assert "multiple of 16" in _a1111_error(client.post("/sdapi/v1/txt2img", json=too_small), "width")


def test_options_choose_the_model_per_api_key(a1111_settings: Settings, redis_client: Redis) -> None:
    settings = a1111_settings.model_copy(update={"api_key_hashes": [hash_key("alice"), hash_key("bob")]})
    app = create_app(settings)
    alice = TestClient(app, headers={"Authorization": "Bearer alice"})
    bob = TestClient(app, headers={"Authorization": "Bearer bob"})
    titles = [model["title"] for model in alice.get("/sdapi/v1/sd-models").json()]
    assert titles == ["circles", "flux", "squares"]
    assert alice.post("/sdapi/v1/options", json={"sd_model_checkpoint": "squares"}).json() is None
    assert alice.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "squares"
    assert bob.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "circles"  # the default
    assert "squares" in _a1111_error(
        alice.post("/sdapi/v1/options", json={"sd_model_checkpoint": "x"}), "sd_model_checkpoint"
    )
    _a1111_error(alice.post("/sdapi/v1/options", json={"sd_vae": "auto"}), "sd_vae")
    assert alice.post("/sdapi/v1/options", json={"samples_format": "png"}).status_code == 200  # as it is: a no-op
    assert alice.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "squares"
    assert TestClient(app).get("/sdapi/v1/options").status_code == 401


def test_samplers_list_a1111_names_with_this_apis_aliases(client: TestClient) -> None:
    samplers = {row["name"]: row for row in client.get("/sdapi/v1/samplers").json()}
    assert samplers["Euler a"]["aliases"] == ["euler_a"]
    assert samplers["Euler"]["aliases"] == ["euler", "flow_euler"]  # sd15 and FLUX rows of one A1111 name
    assert samplers["DPM++ 2M Karras"]["options"] == {"scheduler": "karras"}
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}


def test_png_info_reads_the_parameters_the_worker_writes(client: TestClient) -> None:
    from core.schemas import GenerateRequest

    request = GenerateRequest(prompt="a red, circle", negative_prompt="blurry", width=64, height=72, steps=9)
    text = a1111_parameters(request, 42, "circles")
    data = encode_image(Image.new("RGB", (64, 72)), request.output_format, parameters=text)
    body = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(data).decode()}).json()
    assert body["info"] == text
    parsed = body["parameters"]
    assert (parsed["Prompt"], parsed["Negative prompt"]) == ("a red, circle", "blurry")
    assert (parsed["Steps"], parsed["Seed"], parsed["Size-1"], parsed["Size-2"]) == ("9", "42", "64", "72")
    assert parsed["Sampler"] == "Euler a" and parsed["Model"] == "circles"
    plain = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "paint")
    Image.new("RGB", (8, 8)).save(plain, format="PNG", pnginfo=info)
    empty = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(plain.getvalue()).decode()}).json()
    assert empty == {"info": "", "items": {"Software": "paint"}, "parameters": {}}
    _a1111_error(client.post("/sdapi/v1/png-info", json={"image": "not base64!"}), "image")


def test_a1111_routes_refuse_other_media_types_in_their_shape(client: TestClient) -> None:
    response = client.post("/sdapi/v1/txt2img", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and set(response.json()) == A1111_ERROR_KEYS
    checks = pytest.importorskip("tests.e2e.fuzz_checks", reason="schemathesis not installed (dev extra)")
    assert checks.shape_problem("/sdapi/v1/txt2img", response.json()) is None
    assert checks.shape_problem("/generate", response.json()) is not None
    assert checks.shape_problem("/sdapi/v1/txt2img", client.post("/generate", json={}).json()) is not None
