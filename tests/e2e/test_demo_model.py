"""The demo model through the running service: it draws the colours a prompt asks for (semantic checks)."""

from __future__ import annotations

import base64
import io
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.demo_colours import picture_colours
from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack
from tools.train_demo_model import COLOURS, SHAPES, caption, draw
from worker.pipeline.loading import DEMO_MODEL_DIR

pytestmark = [
    pytest.mark.skipif(
        not (DEMO_MODEL_DIR / "model_index.json").exists(), reason="demo weights not trained into the package"
    ),
    pytest.mark.slow,  # about 100 demo-model images, 20 steps each
]

SETTINGS = {"width": 64, "height": 64, "steps": 20, "guidance_scale": 4.0, "sampler": "euler_a"}


@pytest.fixture(scope="module")
def stack(cache_dir, tmp_path_factory) -> Iterator[Stack]:
    env = {**stack_env(cache_dir), "IMAGEGEN_MODEL": "demo", "IMAGEGEN_MAX_BATCH": "8", "IMAGEGEN_BATCH_WAIT_MS": "50"}
    with started_stack(tmp_path_factory.mktemp("demo"), env) as running:
        yield running


def _generate_all(stack: Stack, bodies: list[dict]) -> list[np.ndarray]:
    """Submit every body first (they queue), then collect each job's images."""
    jobs = [stack.submit(**{**SETTINGS, **body}) for body in bodies]
    pictures = []
    for job in jobs:
        done = stack.wait_job(job["id"])
        assert done["status"] == "succeeded", done
        for url in done["images"]:
            pictures.append(np.asarray(Image.open(io.BytesIO(stack.client.get(url).content)).convert("RGB")))
    return pictures


def test_adherence_to_colour_words(stack: Stack) -> None:
    rng = random.Random(2024)
    cases = []
    for index in range(24):
        foreground, background = rng.sample(list(COLOURS), 2)
        cases.append((rng.choice(SHAPES), foreground, background, 1000 + index))
    pictures = _generate_all(stack, [{"prompt": caption(s, fg, bg), "seed": seed} for s, fg, bg, seed in cases])
    right = [picture_colours(p) == (bg, fg) for p, (_, fg, bg, _) in zip(pictures, cases, strict=True)]
    assert sum(right) >= 0.9 * len(cases), f"{sum(right)}/{len(cases)} right"


def test_swapping_colour_words_swaps_colours(stack: Stack) -> None:
    pairs = [("red", "blue"), ("yellow", "black"), ("white", "green"), ("green", "red")]
    bodies = []
    for fg, bg in pairs:
        bodies.append({"prompt": caption("square", fg, bg), "seed": 7})
        bodies.append({"prompt": caption("square", bg, fg), "seed": 7})
    pictures = _generate_all(stack, bodies)
    swapped = 0
    for (fg, bg), straight, reverse in zip(pairs, pictures[::2], pictures[1::2], strict=True):
        swapped += picture_colours(straight) == (bg, fg) and picture_colours(reverse) == (fg, bg)
    assert swapped >= 3, f"{swapped}/4 swapped"


def test_negative_prompt_steers_away(stack: Stack) -> None:
    # The probe: 16 seeds (two jobs of 8 images, seeds 300..315) of an under-specified prompt; the colour
    # drawn most often falls by at least half when the negative prompt names it.
    prompt = {"prompt": "a circle on a blue background"}
    bodies = [{**prompt, "num_images": 8, "seed": seed} for seed in (300, 308)]
    plain = Counter(picture_colours(p)[1] for p in _generate_all(stack, bodies))
    colour, count = plain.most_common(1)[0]
    assert colour is not None and count >= 6, plain
    negative = [{**body, "negative_prompt": colour} for body in bodies]
    steered = Counter(picture_colours(p)[1] for p in _generate_all(stack, negative))
    assert steered[colour] <= count / 2, (colour, plain, steered)


def test_img2img_keeps_the_input_at_low_strength_and_follows_the_prompt_at_high(stack: Stack) -> None:
    source = io.BytesIO()
    draw("circle", "red", "blue", random.Random(3)).save(source, format="PNG")
    image = base64.b64encode(source.getvalue()).decode()
    # Guidance 2: at higher guidance, classifier-free guidance overshoots the few low-noise steps (model card).
    body = {
        "prompt": caption("square", "green", "yellow"),
        "init_image": image,
        "guidance_scale": 2.0,
        "sampler": "euler",
        "num_images": 8,
        "seed": 0,
    }
    low = [picture_colours(p) for p in _generate_all(stack, [{**body, "strength": 0.2}])]
    high = [picture_colours(p) for p in _generate_all(stack, [{**body, "strength": 0.9}])]
    assert sum(colours == ("blue", "red") for colours in low) >= 7, low  # the input's background and shape
    assert sum(colours == ("yellow", "green") for colours in high) >= 7, high  # the prompt's
