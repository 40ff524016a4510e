"""The demo models through the running service: they draw the colours a prompt asks for (semantic checks). The
same checks run for `demo` (Stable Diffusion 1.x) and `demo-flow` (FLUX-style rectified flow), each at the settings
its model card measured."""

from __future__ import annotations

import base64
import io
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.demo_colours import picture_colours
from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack
from tools.train_demo_model import COLOURS, SHAPES, caption, draw
from worker.pipeline.loading import DEMO_MODELS

pytestmark = pytest.mark.slow  # about 100 images of each demo model, 20 steps each


@dataclass(frozen=True)
class DemoSettings:
    """The request settings a demo model's checks run at: text-to-image, and img2img (lower guidance: at higher,
    guidance overshoots img2img's few low-noise steps; the model cards)."""

    txt2img: dict[str, Any]
    img2img: dict[str, Any]


SIZE = {"width": 64, "height": 64, "steps": 20}
SETTINGS = {
    "demo": DemoSettings(
        {**SIZE, "guidance_scale": 4.0, "sampler": "euler_a"}, {**SIZE, "guidance_scale": 2.0, "sampler": "euler"}
    ),
    # FLUX-style: classifier-free guidance (and so the negative prompt) is `true_cfg_scale`.
    "demo-flow": DemoSettings(
        {**SIZE, "true_cfg_scale": 4.0, "sampler": "flow_euler"},
        {**SIZE, "true_cfg_scale": 2.0, "sampler": "flow_euler"},
    ),
}


@dataclass(frozen=True)
class ServedDemo:
    """A running stack serving one demo model, and the settings its checks run at."""

    stack: Stack
    settings: DemoSettings


def _shipped(name: str) -> Any:
    folder: Path = DEMO_MODELS[name]
    missing = not (folder / "model_index.json").exists()
    return pytest.param(name, marks=pytest.mark.skipif(missing, reason=f"{name} not trained into the package"))


@pytest.fixture(scope="module", params=[_shipped(name) for name in SETTINGS])
def demo(request, cache_dir, tmp_path_factory) -> Iterator[ServedDemo]:
    name = request.param
    env = {**stack_env(cache_dir), "IMAGEGEN_MODEL": name, "IMAGEGEN_MAX_BATCH": "8", "IMAGEGEN_BATCH_WAIT_MS": "50"}
    with started_stack(tmp_path_factory.mktemp(name), env) as running:
        yield ServedDemo(running, SETTINGS[name])


def _generate_all(stack: Stack, settings: dict[str, Any], bodies: list[dict]) -> list[np.ndarray]:
    """Submit every body (over `settings`) first (they queue), then collect each job's images."""
    jobs = [stack.submit(**{**settings, **body}) for body in bodies]
    pictures = []
    for job in jobs:
        done = stack.wait_job(job["id"])
        assert done["status"] == "succeeded", done
        for url in done["images"]:
            pictures.append(np.asarray(Image.open(io.BytesIO(stack.client.get(url).content)).convert("RGB")))
    return pictures


def test_adherence_to_colour_words(demo: ServedDemo) -> None:
    rng = random.Random(2024)
    cases = []
    for index in range(24):
        foreground, background = rng.sample(list(COLOURS), 2)
        cases.append((rng.choice(SHAPES), foreground, background, 1000 + index))
    bodies = [{"prompt": caption(s, fg, bg), "seed": seed} for s, fg, bg, seed in cases]
    pictures = _generate_all(demo.stack, demo.settings.txt2img, bodies)
    right = [picture_colours(p) == (bg, fg) for p, (_, fg, bg, _) in zip(pictures, cases, strict=True)]
    assert sum(right) >= 0.9 * len(cases), f"{sum(right)}/{len(cases)} right"


def test_swapping_colour_words_swaps_colours(demo: ServedDemo) -> None:
    pairs = [("red", "blue"), ("yellow", "black"), ("white", "green"), ("green", "red")]
    bodies = []
    for fg, bg in pairs:
        bodies.append({"prompt": caption("square", fg, bg), "seed": 7})
        bodies.append({"prompt": caption("square", bg, fg), "seed": 7})
    pictures = _generate_all(demo.stack, demo.settings.txt2img, bodies)
    swapped = 0
    for (fg, bg), straight, reverse in zip(pairs, pictures[::2], pictures[1::2], strict=True):
        swapped += picture_colours(straight) == (bg, fg) and picture_colours(reverse) == (fg, bg)
    assert swapped >= 3, f"{swapped}/4 swapped"


def test_negative_prompt_steers_away(demo: ServedDemo) -> None:
    # The probe: 16 seeds (two jobs of 8 images, seeds 300..315) of an under-specified prompt; the colour
    # drawn most often falls by at least half when the negative prompt names it.
    prompt = {"prompt": "a circle on a blue background"}
    bodies = [{**prompt, "num_images": 8, "seed": seed} for seed in (300, 308)]
    plain = Counter(picture_colours(p)[1] for p in _generate_all(demo.stack, demo.settings.txt2img, bodies))
    colour, count = plain.most_common(1)[0]
    assert colour is not None and count >= 6, plain
    negative = [{**body, "negative_prompt": colour} for body in bodies]
    steered = Counter(picture_colours(p)[1] for p in _generate_all(demo.stack, demo.settings.txt2img, negative))
    assert steered[colour] <= count / 2, (colour, plain, steered)


def test_img2img_keeps_the_input_at_low_strength_and_follows_the_prompt_at_high(demo: ServedDemo) -> None:
    source = io.BytesIO()
    draw("circle", "red", "blue", random.Random(3)).save(source, format="PNG")
    image = base64.b64encode(source.getvalue()).decode()
    body = {"prompt": caption("square", "green", "yellow"), "init_image": image, "num_images": 8, "seed": 0}
    low = [picture_colours(p) for p in _generate_all(demo.stack, demo.settings.img2img, [{**body, "strength": 0.2}])]
    high = [picture_colours(p) for p in _generate_all(demo.stack, demo.settings.img2img, [{**body, "strength": 0.9}])]
    assert sum(colours == ("blue", "red") for colours in low) >= 7, low  # the input's background and shape
    assert sum(colours == ("yellow", "green") for colours in high) >= 7, high  # the prompt's
