"""Two models from one models file, each served by its own worker process: requests reach the worker of the model they
name, `GET /models` shows each with its worker, and once a worker is gone its model answers 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import two_model_stack
from tests.e2e.processes import Process, Stack, wait_until

MODELS = """
[models.circles]
source = "tiny"
steps = 2
width = 64
height = 64

[models.squares]
source = "tiny"
steps = 3
width = 64
height = 64
"""


@pytest.fixture(scope="module")
def two_models(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Process]]:
    tmp = tmp_path_factory.mktemp("routing")
    with two_model_stack(tmp, cache_dir, MODELS, IMAGEGEN_QUEUE_WITHOUT_WORKERS="false") as running:
        yield running


def test_each_model_is_served_by_its_own_worker(two_models: tuple[Stack, Process]) -> None:
    stack, _ = two_models
    listed = {m["name"]: m for m in stack.client.get("/models").json()}
    assert {name: m["worker_ids"] for name, m in listed.items()} == {
        "circles": ["worker-circles"],
        "squares": ["worker-squares"],
    }
    assert listed["squares"]["defaults"]["steps"] == 3
    jobs = [stack.submit(prompt="x", model=model, seed=1) for model in ("squares", "circles", "squares")]
    done = [stack.wait_job(job["id"]) for job in jobs]
    assert [job["status"] for job in done] == ["succeeded"] * 3
    assert [job["worker_id"] for job in done] == ["worker-squares", "worker-circles", "worker-squares"]
    assert [job["progress"]["total"] for job in done] == [3, 2, 3]  # each model's default steps
    assert [job["provenance"]["model"] for job in done] == ["squares", "circles", "squares"]


def test_a_model_whose_worker_stopped_answers_503(two_models: tuple[Stack, Process]) -> None:
    stack, second = two_models
    assert second.stop() == 0  # SIGTERM: warm shutdown, it leaves the registry
    wait_until(
        lambda: {m["name"]: m["workers"] for m in stack.client.get("/models").json()}["squares"] == 0,
        30,
        "the squares worker to leave",
    )
    refused = stack.client.post("/generate", json={"prompt": "x", "model": "squares"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_worker"
    assert stack.submit(prompt="x", model="circles")["status"] == "queued"
