"""The rectified-flow families end to end: one real API and three real workers, each serving the tiny model of one
family (`tiny-flux`, `tiny-sd3`, `tiny-qwen-image`, built in code). For each: `GET /models` shows the family's
capabilities; text-to-image runs with the family's default sampler and another it runs, img2img and inpainting run
(the unmasked pixels come back as sent), previews of its 16-channel latents arrive, the image carries the family's
parameters and the job its provenance; a request the family's rules refuse is a 422 naming the field."""

from __future__ import annotations

import base64
import io
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from redis import Redis

from tests.conftest import TEST_REDIS_URL
from tests.e2e.conftest import stack_env
from tests.e2e.processes import Process, Stack, free_port, wait_until
from tests.e2e.sse import read_events
from worker.encoding import read_parameters

pytestmark = pytest.mark.slow

FAMILIES = {"tiny-flux": "flux", "tiny-sd3": "sd3", "tiny-qwen-image": "qwen-image"}
# Per family: a text-to-image sampler besides the default `flow_euler` (core/samplers.py), with the diffusers
# scheduler and A1111 name it runs as.
OTHER_SAMPLER = {
    "tiny-flux": ("flow_dpmpp_2m", "DPMSolverMultistepScheduler", "DPM++ 2M"),
    "tiny-sd3": ("flow_heun", "FlowMatchHeunDiscreteScheduler", "Heun"),
    "tiny-qwen-image": ("flow_unipc", "UniPCMultistepScheduler", "UniPC"),
}
TXT2IMG_SAMPLERS = {
    "tiny-flux": ["flow_euler", "flow_dpmpp_2m", "flow_unipc"],
    "tiny-sd3": ["flow_euler", "flow_heun", "flow_dpmpp_2m", "flow_unipc"],
    "tiny-qwen-image": ["flow_euler", "flow_unipc"],
}
# Not square, so a swapped width and height shows; both multiples of the families' 16.
WIDTH, HEIGHT = 80, 64
# What each family's A1111 `parameters` text says of its guidance, at the family's defaults.
GUIDANCE_TEXT = {
    "tiny-flux": "CFG scale: 1, Distilled CFG Scale: 3.5",  # true CFG off; FLUX.1-dev's distilled guidance
    "tiny-sd3": "CFG scale: 7",
    "tiny-qwen-image": "CFG scale: 4",  # Qwen-Image's CFG is its true_cfg_scale
}
SMALL = {"prompt": "a red circle on a blue background", "width": WIDTH, "height": HEIGHT, "steps": 2, "seed": 7}


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One API (its default model `tiny-flux`) with the `tiny-flux` worker, and a worker each for the other two."""
    tmp = tmp_path_factory.mktemp("flow-families")
    env = {
        **stack_env(cache_dir),
        "IMAGEGEN_MODEL": "tiny-flux",
        "IMAGEGEN_QUEUE_WITHOUT_WORKERS": "false",
        "IMAGEGEN_WARMUP_STEPS": "0",  # tiny-flux and tiny-qwen-image warm up at 1024²: seconds on a CPU
    }
    redis = Redis.from_url(TEST_REDIS_URL)
    redis.flushdb()
    running = Stack(tmp, env, {"IMAGEGEN_WORKER_ID": "worker-tiny-flux"})
    others = [
        Process(
            ["worker"],
            {
                **env,
                "IMAGEGEN_MODEL": name,
                "IMAGEGEN_WORKER_ID": f"worker-{name}",
                "IMAGEGEN_METRICS_PORT": str(free_port()),
            },
            tmp / f"worker-{name}.log",
        )
        for name in ("tiny-sd3", "tiny-qwen-image")
    ]
    try:
        running.wait_ready()

        def all_served() -> bool:
            listed = {m["name"]: m["workers"] for m in running.client.get("/models").json()}
            return all(listed.get(name) for name in FAMILIES)

        try:
            wait_until(all_served, 120, "a worker for each family", interval=0.2)
        except TimeoutError as exc:
            logs = "\n".join(f"--- {p.log_path.name} ---\n{p.log()}" for p in others)
            raise TimeoutError(f"{exc}\n{logs}") from None
        yield running
    finally:
        for process in [*others, running.worker]:  # all at once: a worker's warm shutdown takes a moment
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        running.stop()
        for process in others:
            process.stop()
        redis.flushdb()
        redis.close()


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _image(stack: Stack, url: str) -> tuple[Image.Image, bytes]:
    response = stack.client.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content)), response.content


def _succeeded(stack: Stack, job: dict[str, Any]) -> dict[str, Any]:
    done = stack.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    return done


def test_models_show_each_familys_capabilities(stack: Stack) -> None:
    listed = {m["name"]: m for m in stack.client.get("/models").json()}
    for name, family in FAMILIES.items():
        model = listed[name]
        assert model["family"] == family
        assert model["worker_ids"] == [f"worker-{name}"]
        caps = model["capabilities"]
        assert caps["modes"] == ["txt2img", "img2img", "inpaint"]
        assert caps["size_multiple"] == 16
        assert caps["samplers_by_mode"]["txt2img"] == TXT2IMG_SAMPLERS[name]
        assert caps["samplers_by_mode"]["img2img"] == ["flow_euler", *(["flow_heun"] if family == "sd3" else [])]
        # What the worker offers is what the API allows: the loaded pipeline runs the table's samplers.
        assert sorted(model["samplers"]) == sorted(TXT2IMG_SAMPLERS[name])
        assert model["defaults"]["sampler"] == "flow_euler"
    flux, sd3, qwen = (listed[name]["capabilities"] for name in FAMILIES)
    assert (flux["guidance"], flux["negative_prompt"], flux["true_cfg"]) == ("distilled", "true_cfg", True)
    assert (sd3["guidance"], sd3["negative_prompt"], sd3["true_cfg"]) == ("cfg", "yes", False)
    assert (qwen["guidance"], qwen["negative_prompt"], qwen["true_cfg"]) == ("cfg", "true_cfg", True)
    assert (flux["max_prompt_tokens"], sd3["max_prompt_tokens"], qwen["max_prompt_tokens"]) == (512, 512, 1024)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "tiny-flux", "negative_prompt": "blurry"}, "negative_prompt"),  # needs true_cfg_scale > 1
        ({"model": "tiny-flux", "width": 72}, "width"),  # not a multiple of 16
        ({"model": "tiny-sd3", "true_cfg_scale": 4}, "true_cfg_scale"),  # SD3 has plain CFG
        ({"model": "tiny-sd3", "sampler": "euler_a"}, "sampler"),  # an SD-line sampler
        ({"model": "tiny-qwen-image", "sampler": "flow_heun"}, "sampler"),  # its pipeline passes sigmas
        ({"model": "tiny-qwen-image", "height": 72}, "height"),
    ],
)
def test_a_familys_rule_is_a_422_naming_the_field(stack: Stack, body: dict[str, Any], field: str) -> None:
    response = stack.client.post("/generate", json={**SMALL, **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [detail["field"] for detail in error["details"]] == [field], error
    assert error["message"].startswith(f"{field}: ")


def test_image_modes_need_a_sampler_that_noises_the_input(stack: Stack) -> None:
    # The multistep solvers run text-to-image only on the flow families: img2img with one is refused up front.
    picture = _png(Image.new("RGB", (WIDTH, HEIGHT), (200, 40, 30)))
    response = stack.client.post(
        "/generate", json={**SMALL, "model": "tiny-qwen-image", "sampler": "flow_unipc", "init_image": picture}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "sampler"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_txt2img_with_two_samplers_previews_parameters_and_provenance(stack: Stack, name: str) -> None:
    other, scheduler, a1111_name = OTHER_SAMPLER[name]
    default = stack.submit(**SMALL, model=name, preview_every=1)
    second = stack.submit(**SMALL, model=name, sampler=other)
    events = list(read_events(stack.client, default["id"]))
    assert events[-1].type == "succeeded", events[-1]
    previews = [e.data for e in events if e.type == "preview"]
    assert [p["step"] for p in previews] == [1, 2]
    for preview in previews:  # the 16 latent channels (FLUX, Qwen-Image: unpacked from 2x2) at 1/8 of the size
        image = Image.open(io.BytesIO(base64.b64decode(preview["data"])))
        assert image.size == (preview["width"], preview["height"]) == (WIDTH // 8, HEIGHT // 8)

    done = [_succeeded(stack, job) for job in (default, second)]
    assert [job["worker_id"] for job in done] == [f"worker-{name}"] * 2
    assert [job["request"]["sampler"] for job in done] == ["flow_euler", other]
    assert done[0]["provenance"]["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert done[1]["provenance"]["scheduler"] == scheduler
    images = []
    for job, sampler_name in zip(done, ("Euler", a1111_name), strict=True):
        image, data = _image(stack, job["images"][0])
        assert (image.format, image.size) == ("PNG", (WIDTH, HEIGHT))
        images.append(np.asarray(image.convert("RGB")))
        parameters = read_parameters(data)  # AUTOMATIC1111's text, the flow sampler by its A1111 name
        assert parameters == (
            f"{SMALL['prompt']}\nSteps: 2, Sampler: {sampler_name}, {GUIDANCE_TEXT[name]}, Seed: 7, "
            f"Size: {WIDTH}x{HEIGHT}, Model: {name}"
        )
        provenance = job["provenance"]
        assert provenance["model"] == name
        assert (provenance["device"], provenance["dtype"]) == ("cpu", "float32")
        assert len(provenance["model_hash"]) == 64
    # The same seed through another sampler: other pixels.
    assert not np.array_equal(images[0], images[1])
    # The flow scheduler's own settings are recorded (SD3 a fixed shift; FLUX and Qwen-Image their dynamic one).
    config = done[0]["provenance"]["scheduler_config"]
    assert config["use_dynamic_shifting"] is (name != "tiny-sd3")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_img2img_and_inpainting(stack: Stack, name: str) -> None:
    picture = Image.new("RGB", (WIDTH, HEIGHT), (200, 40, 30))
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    mask.paste(255, (16, 16, 64, 48))  # repaint the middle, keep the border
    img2img = stack.submit(**SMALL, model=name, init_image=_png(picture), strength=0.5)
    inpaint = stack.submit(**SMALL, model=name, image=_png(picture), mask_image=_png(mask), strength=1.0)
    done_img2img, done_inpaint = _succeeded(stack, img2img), _succeeded(stack, inpaint)
    # The flow pipelines skip int(steps - steps * strength) of the steps: one of two at 0.5.
    assert done_img2img["progress"]["total"] == 1
    assert done_inpaint["progress"]["total"] == 2
    image, data = _image(stack, done_img2img["images"][0])
    assert image.size == (WIDTH, HEIGHT)
    assert read_parameters(data).endswith(f"Model: {name}, Denoising strength: 0.5")
    inpainted = np.asarray(_image(stack, done_inpaint["images"][0])[0].convert("RGB")).astype(int)
    kept = np.asarray(mask) == 0
    assert inpainted.shape == (HEIGHT, WIDTH, 3)
    assert np.array_equal(inpainted[kept], np.asarray(picture).astype(int)[kept])  # the border as sent
    assert not np.array_equal(inpainted[~kept], np.asarray(picture).astype(int)[~kept])  # the middle repainted
