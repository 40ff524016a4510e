"""The AUTOMATIC1111-compatible routes through the `webuiapi` client from PyPI, against the real API and two worker
processes (two models of the models file, each `tiny`): txt2img, img2img with and without a mask, the model switch
and an interrupt while a job runs; raw requests for progress and png-info."""

from __future__ import annotations

import base64
import io
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image, ImageDraw

from tests.e2e.conftest import two_model_stack
from tests.e2e.processes import Stack, wait_until

pytestmark = pytest.mark.slow  # two worker processes; the other routes' field rules: tests/integration/test_a1111.py

MODELS = """
[models.circles]
source = "tiny"

[models.squares]
source = "tiny"
"""
SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def two_models(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with two_model_stack(tmp_path_factory.mktemp("a1111"), cache_dir, MODELS) as (stack, _):
        yield stack


def _api(stack: Stack) -> Any:
    return webuiapi.WebUIApi(host="127.0.0.1", port=stack.port)


def _noise(seed: int) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (64, 64), bytes(rng.randrange(256) for _ in range(64 * 64 * 3)))


def test_txt2img_images_info_and_png_info(two_models: Stack) -> None:
    api = _api(two_models)
    result = api.txt2img(prompt="a red circle", seed=1234, batch_size=2, sampler_name="DPM++ 2M Karras", **SMALL)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.info["seed"] == 1234 and result.info["all_seeds"] == [1234, 1235]
    assert result.info["sampler_name"] == "DPM++ 2M Karras" and result.info["sd_model_name"] == "circles"
    assert result.parameters["prompt"] == "a red circle" and result.parameters["batch_size"] == 2
    job = two_models.client.get(f"/jobs/{result.info['job_id']}").json()
    assert job["request"]["sampler"] == "dpmpp_2m_karras" and job["request"]["num_images"] == 2
    # The client re-encodes the PNG with its text chunks; png-info reads the worker's parameters text back.
    info = api.png_info(result.images[1])
    assert info.info == result.info["infotexts"][1]
    assert info.json["parameters"]["Seed"] == "1235" and info.json["parameters"]["Sampler"] == "DPM++ 2M Karras"


def test_img2img_and_inpainting_keep_what_the_mask_keeps(two_models: Stack) -> None:
    api = _api(two_models)
    init = _noise(7)
    redrawn = api.img2img(images=[init], prompt="a blue square", denoising_strength=0.7, seed=5, **SMALL)
    assert redrawn.images[0].size == (64, 64)
    assert redrawn.images[0].convert("RGB").tobytes() != init.tobytes()
    mask = Image.new("L", (64, 64))
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    painted = api.img2img(images=[init], mask_image=mask, prompt="a blue square", denoising_strength=1.0, **SMALL)
    out = painted.images[0].convert("RGB")
    outside = [(x, y) for x in range(64) for y in range(64) if not (16 <= x <= 47 and 16 <= y <= 47)]
    assert all(out.getpixel(point) == init.getpixel(point) for point in outside)
    assert out.crop((16, 16, 48, 48)).tobytes() != init.crop((16, 16, 48, 48)).tobytes()


def test_model_switch_routes_later_calls_to_the_other_worker(two_models: Stack) -> None:
    api = _api(two_models)
    assert sorted(model["title"] for model in api.get_sd_models()) == ["circles", "squares"]
    api.util_set_model("squares")
    try:
        assert api.util_get_current_model() == "squares"
        result = api.txt2img(prompt="x", **SMALL)
        assert result.info["sd_model_name"] == "squares"
        job = two_models.client.get(f"/jobs/{result.info['job_id']}").json()
        assert job["worker_id"] == "worker-squares"
        # override_settings picks the model for one call only.
        once = api.txt2img(prompt="x", override_settings={"sd_model_checkpoint": "circles"}, **SMALL)
        assert once.info["sd_model_name"] == "circles"
    finally:
        api.util_set_model("circles")


def test_interrupt_while_running_ends_the_call_with_no_images(two_models: Stack) -> None:
    api = _api(two_models)
    outcome: dict[str, Any] = {}

    def generate() -> None:
        outcome["result"] = api.txt2img(prompt="x", width=64, height=64, steps=150, batch_size=2)

    caller = threading.Thread(target=generate)
    caller.start()
    try:
        # Raw progress: running, a step done and, past step 10, the latest preview as a PNG.
        def previewing() -> dict[str, Any] | None:
            progress = httpx.get(f"{two_models.url}/sdapi/v1/progress").json()
            return progress if progress["current_image"] else None

        progress = wait_until(previewing, 60, "a step preview", interval=0.05)
        assert progress["state"]["job_count"] == 1 and progress["state"]["sampling_steps"] == 150
        assert 0 < progress["progress"] < 1 and progress["state"]["sampling_step"] >= 10
        preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
        assert preview.format == "PNG"
        assert api.interrupt() == {}
    finally:
        caller.join(timeout=120)
    result = outcome["result"]
    assert result.images == [] and result.info["interrupted"] is True
    job = two_models.client.get(f"/jobs/{result.info['job_id']}").json()
    assert job["status"] == "canceled" and job["progress"]["step"] < 150
    assert httpx.get(f"{two_models.url}/sdapi/v1/progress").json()["state"]["job_count"] == 0
