"""Several models: the models file names them with their family and defaults; requests go to their model's queue,
take its defaults for what they leave out, and a model without a live worker answers 503 unless queuing is allowed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from core import keys
from core.catalog import ModelsFileError, model_entries, served_entry, with_served_model
from core.queueing import model_queue
from core.redis_connection import async_redis_client
from core.schemas import Sampler, WorkerInfo
from core.settings import Settings
from core.workers import model_workers, publish_worker, remove_worker, serves
from service.app import create_app

MODELS_TOML = """
[models.fast]
source = "tiny"
family = "turbo"

[models.big]
source = "/models/sdxl.safetensors"
family = "sdxl"
sampler = "dpmpp_2m"
steps = 40

[models.tiny]
source = "tiny"
width = 64
height = 64
"""


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(MODELS_TOML)
    return path


@pytest.fixture
def routed(settings: Settings, models_file: Path, redis_client: Redis) -> TestClient:
    configured = settings.model_copy(update={"models_file": models_file, "queue_without_workers": False})
    return TestClient(create_app(configured), raise_server_exceptions=False)


def _live(redis: Redis, worker_id: str, model: str) -> None:
    now = datetime.now(UTC)
    info = WorkerInfo(
        id=worker_id,
        model=model,
        source="tiny",
        samplers=[Sampler.EULER],
        device="cpu",
        dtype="float32",
        state="ready",
        started_at=now,
        heartbeat_at=now,
    )
    publish_worker(redis, info, heartbeat_seconds=5)


def test_entries_bring_family_defaults_overridden_by_their_own(settings: Settings, models_file: Path) -> None:
    entries = model_entries(settings.model_copy(update={"models_file": models_file}))
    assert entries["fast"].defaults() == {
        "width": 512,
        "height": 512,
        "steps": 1,
        "sampler": Sampler.EULER_A,
        "guidance_scale": 0.0,
    }
    assert entries["big"].defaults() == {
        "width": 1024,
        "height": 1024,
        "steps": 40,
        "sampler": Sampler.DPMPP_2M,
        "guidance_scale": 7.0,
    }
    assert entries["demo"].defaults()["width"] == 64  # built in


def test_a_worker_started_with_an_entry_name_serves_its_source_under_that_name(
    settings: Settings, models_file: Path
) -> None:
    worker = with_served_model(settings.model_copy(update={"models_file": models_file, "model": "big"}))
    assert worker.model == "/models/sdxl.safetensors"
    assert (worker.served_model_name(), worker.model_family) == ("big", "sdxl")
    plain = with_served_model(settings.model_copy(update={"model": "/data/my-model"}))
    assert (plain.model, plain.served_model_name()) == ("/data/my-model", "my-model")
    assert served_entry(settings)[0] == "tiny"


def test_a_broken_models_file_is_refused_with_its_path(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.x]\nsource = "tiny"\nfamily = "sd9"\n')
    with pytest.raises(ModelsFileError, match=r"bad\.toml"):
        model_entries(settings.model_copy(update={"models_file": bad}))


def test_requests_route_to_their_models_queue_with_its_defaults(routed: TestClient, redis_client: Redis) -> None:
    _live(redis_client, "w-fast", "fast")
    _live(redis_client, "w-tiny", "tiny")
    fast = routed.post("/generate", json={"prompt": "x", "model": "fast"})
    assert fast.status_code == 202, fast.text
    request = fast.json()["request"]
    assert (request["steps"], request["guidance_scale"], request["width"]) == (1, 0.0, 512)
    default = routed.post("/generate", json={"prompt": "x", "steps": 3})  # no model: the default (tiny)
    assert default.json()["request"]["model"] == "tiny"
    assert (default.json()["request"]["width"], default.json()["request"]["steps"]) == (64, 3)  # given fields kept
    assert model_queue(redis_client, "fast").job_ids == [fast.json()["id"]]
    assert model_queue(redis_client, "tiny").job_ids == [default.json()["id"]]


def test_a_model_without_a_live_worker_is_503_unless_queuing_is_allowed(
    routed: TestClient, settings: Settings, models_file: Path, redis_client: Redis
) -> None:
    refused = routed.post("/generate", json={"prompt": "x", "model": "big"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "10"
    assert refused.json()["error"]["code"] == "no_worker"
    assert refused.json()["error"]["message"] == "model big: no live worker serves it now; retry later"
    assert model_queue(redis_client, "big").count == 0
    listed = {m["name"]: m["workers"] for m in routed.get("/models").json()}
    assert listed == {"big": 0, "fast": 0, "tiny": 0}

    allowed = settings.model_copy(update={"models_file": models_file, "queue_without_workers": True})
    queued = TestClient(create_app(allowed)).post("/generate", json={"prompt": "x", "model": "big"})
    assert queued.status_code == 202
    assert queued.json()["request"]["sampler"] == "dpmpp_2m"


def test_a_model_default_that_leaves_no_step_is_422(routed: TestClient, redis_client: Redis) -> None:
    _live(redis_client, "w-fast", "fast")
    body = {"prompt": "x", "model": "fast", "init_image": _tiny_png(), "strength": 0.5}
    response = routed.post("/generate", json=body)
    assert response.status_code == 422
    assert "runs no step" in response.json()["error"]["message"]


def test_limits_are_checked_on_the_jobs_final_size(settings: Settings, models_file: Path, redis_client: Redis) -> None:
    # max_pixels 512x512: "big" (family sdxl) defaults to 1024x1024, "tiny" (its entry) to 64x64.
    limited = settings.model_copy(
        update={"models_file": models_file, "queue_without_workers": False, "max_pixels": 512 * 512}
    )
    client = TestClient(create_app(limited), raise_server_exceptions=False)
    _live(redis_client, "w-big", "big")
    _live(redis_client, "w-tiny", "tiny")

    refused = client.post("/generate", json={"prompt": "x", "model": "big"})  # size left out: the model's 1024x1024
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == "width*height: 1024x1024 = 1048576 pixels is over the limit of 262144 pixels"
    assert model_queue(redis_client, "big").count == 0

    explicit = client.post("/generate", json={"prompt": "x", "model": "big", "width": 512, "height": 512})
    assert explicit.status_code == 202, explicit.text
    assert (explicit.json()["request"]["width"], explicit.json()["request"]["height"]) == (512, 512)

    # Checked once, after the defaults: a limit under the request schema's own 512x512 does not refuse a model
    # whose default size is within it.
    small = limited.model_copy(update={"max_pixels": 128 * 128})
    tiny = TestClient(create_app(small), raise_server_exceptions=False).post("/generate", json={"prompt": "x"})
    assert tiny.status_code == 202, tiny.text
    assert (tiny.json()["request"]["width"], tiny.json()["request"]["height"]) == (64, 64)


def test_too_many_pixels_names_the_limit(settings: Settings, redis_client: Redis) -> None:
    limited = settings.model_copy(update={"max_pixels": 512 * 512})
    client = TestClient(create_app(limited), raise_server_exceptions=False)
    response = client.post("/generate", json={"prompt": "a red circle", "width": 1024, "height": 1024, "steps": 2})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"] == "width*height: 1024x1024 = 1048576 pixels is over the limit of 262144 pixels"


def _tiny_png() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_whether_a_model_is_served_is_read_without_every_worker_record(redis_client: Redis, settings: Settings) -> None:
    """A submission asks `serves(model)` (one sorted-set read and one EXISTS), not every worker's record."""
    now = datetime.now(UTC)
    aio = async_redis_client(settings)  # the API's kind of client: a submission asks on it
    loop = asyncio.Runner()  # one loop for the client's connections

    def served(model: str) -> bool:
        return loop.run(serves(aio, model))

    def beat(worker_id: str, model: str) -> None:
        info = WorkerInfo(
            id=worker_id, model=model, source=model, samplers=[Sampler.EULER], device="cpu", dtype="float32",
            state="ready", started_at=now, heartbeat_at=now,
        )  # fmt: skip
        publish_worker(redis_client, info, heartbeat_seconds=5)

    beat("a1", "alpha")
    beat("b1", "beta")
    assert served("alpha") and served("beta") and not served("gamma")
    assert [worker.id for worker in model_workers(redis_client, "alpha")] == ["a1"]
    remove_worker(redis_client, "a1", "alpha")  # a worker that stops leaves its model's set
    assert not served("alpha") and model_workers(redis_client, "alpha") == []
    redis_client.delete(keys.worker_key("b1"))  # a record gone without its model's set knowing: read them all
    assert not served("beta")
    beat("b2", "beta")
    assert served("beta")
    redis_client.zadd(keys.model_workers_key("beta"), {"b1": time.time() - 1, "b2": time.time() - 1})
    assert not served("beta")  # both beats' time ran out (their records expire with it)
    loop.run(aio.aclose())
    loop.close()
