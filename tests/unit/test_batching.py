"""Grouping queued jobs into batches (pure), and a batch's pixels equal each job's alone (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest

from core.schemas import GenerateRequest
from core.settings import Settings
from worker.batching import batch_key, select_batch, split_counts
from worker.pipeline.generation import generate_batch, generate_images
from worker.pipeline.loading import load_model

BASE = {"prompt": "x", "width": 64, "height": 64, "steps": 3, "sampler": "euler", "guidance_scale": 5.0}


def _r(**fields) -> GenerateRequest:
    return GenerateRequest(**{**BASE, **fields})


def test_key_ignores_what_may_differ_per_job() -> None:
    assert batch_key(_r(prompt="a", seed=1, num_images=2, negative_prompt="n", output_format="webp")) == batch_key(
        _r(prompt="b", seed=9, preview_every=2)
    )
    for differing in (
        {"width": 72},
        {"height": 72},
        {"steps": 4},
        {"sampler": "ddim"},
        {"guidance_scale": 6.0},
        {"true_cfg_scale": 4.0},
        {"model": "other"},
        {"init_image": "sha256:a"},
        {"image": "sha256:a", "mask_image": "sha256:b"},
        {"loras": [{"name": "style"}]},
    ):
        assert batch_key(_r(**differing)) != batch_key(_r()), differing


def test_image_jobs_batch_by_strength_and_adapters_not_by_image() -> None:
    image_job = _r(init_image="sha256:a", strength=0.5, loras=[{"name": "s", "scale": 0.5}])
    assert batch_key(image_job) == batch_key(
        _r(init_image="sha256:b", strength=0.5, loras=[{"name": "s", "scale": 0.5}])
    )
    assert batch_key(image_job) != batch_key(image_job.model_copy(update={"strength": 0.6}))
    assert batch_key(_r(loras=[{"name": "s", "scale": 0.5}])) != batch_key(_r(loras=[{"name": "s", "scale": 0.6}]))
    assert batch_key(_r(strength=0.3)) == batch_key(_r())  # strength means nothing to text-to-image


def test_select_batch_in_queue_order_within_caps() -> None:
    queue = [("a", _r()), ("b", _r(steps=9)), ("c", _r(num_images=4)), ("d", _r()), ("e", _r())]
    assert select_batch(_r(), queue, max_jobs=4, max_images=16) == ["a", "c", "d"]
    assert select_batch(_r(), queue, max_jobs=2, max_images=16) == ["a"]
    # "c" does not fit in 4 images, but the smaller jobs after it still do: skip, don't stop.
    assert select_batch(_r(), queue, max_jobs=8, max_images=4) == ["a", "d", "e"]
    assert select_batch(_r(), queue, max_jobs=1, max_images=16) == []


def test_split_counts() -> None:
    parts = split_counts([_r(num_images=2), _r(), _r(num_images=3)])
    assert [(p.start, p.stop) for p in parts] == [(0, 2), (2, 3), (3, 6)]


@pytest.fixture(scope="module")
def pipeline(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu")).pipeline


def test_batch_pixels_equal_each_job_alone(pipeline) -> None:
    config = dict(pipeline.scheduler.config)
    requests = [
        _r(prompt="a red circle", negative_prompt="blue", seed=1, num_images=2),
        _r(prompt="a green square", seed=2),
        _r(prompt="a white triangle", negative_prompt="black", seed=3),
    ]
    batched = generate_batch(pipeline, config, requests)
    assert [len(images) for images in batched] == [2, 1, 1]
    for request, images in zip(requests, batched, strict=True):
        alone = generate_images(pipeline, config, request)
        for got, want in zip(images, alone, strict=True):
            difference = np.abs(np.asarray(got).astype(int) - np.asarray(want).astype(int))
            assert difference.max() <= 2, difference.max()


def test_incompatible_requests_are_refused(pipeline) -> None:
    with pytest.raises(ValueError, match="share"):
        generate_batch(pipeline, dict(pipeline.scheduler.config), [_r(), _r(steps=4)])


def test_a_reproducible_job_runs_alone() -> None:
    candidates = [("plain", _r()), ("alone", _r(reproducible=True)), ("plain-2", _r())]
    assert select_batch(_r(), candidates, max_jobs=4, max_images=16) == ["plain", "plain-2"]  # nobody's mate
    assert select_batch(_r(reproducible=True), candidates, max_jobs=4, max_images=16) == []  # takes none
