"""The API on the real Redis: submission queues an RQ job carrying the request's JSON; reads follow the record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from core import keys
from core.families import FAMILIES, ModelFamily
from core.jobs import JobStore
from core.queueing import model_queue
from core.schemas import GenerateRequest, Sampler, WorkerInfo
from core.settings import Settings
from core.workers import publish_worker
from service.app import create_app

REQUEST = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 3}


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _worker(worker_id: str, model: str, samplers: list[Sampler]) -> WorkerInfo:
    now = datetime.now(UTC)
    return WorkerInfo(
        id=worker_id,
        model=model,
        source=model,
        samplers=samplers,
        device="cpu",
        dtype="float32",
        state="ready",
        started_at=now,
        heartbeat_at=now,
    )


def test_generate_answers_202_with_location_and_queues_json(client: TestClient, redis_client: Redis) -> None:
    response = client.post("/generate", json={**REQUEST, "seed": 42})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["seed"] == 42
    assert job["model"] == "tiny"
    assert job["progress"] == {"step": 0, "total": 3, "fraction": 0.0}

    queue = model_queue(redis_client, "tiny")
    assert queue.job_ids == [job["id"]]
    # Dequeued as a worker's loop does: the bare id, no RQ job hash; the request lives once, in the job record.
    dequeued, _ = queue.rq.dequeue_any([queue.rq], timeout=None, connection=redis_client)
    assert dequeued.id == job["id"]
    assert not redis_client.exists(f"rq:job:{job['id']}")
    stored = GenerateRequest.model_validate_json(redis_client.hget(f"imagegen:job:{job['id']}", "request"))
    assert stored == GenerateRequest(**REQUEST, seed=42, model="tiny")


def test_absent_seed_is_drawn_and_recorded(client: TestClient, store: JobStore) -> None:
    seeds = {client.post("/generate", json=REQUEST).json()["seed"] for _ in range(5)}
    assert len(seeds) > 1
    assert all(0 <= seed < 2**32 for seed in seeds)
    job_id = client.post("/generate", json=REQUEST).json()["id"]
    assert store.get(job_id).request.seed == store.get(job_id).seed


def test_get_job_shows_queue_position(client: TestClient) -> None:
    ids = [client.post("/generate", json=REQUEST).json()["id"] for _ in range(3)]
    positions = [client.get(f"/jobs/{job_id}").json()["queue_position"] for job_id in ids]
    assert positions == [0, 1, 2]


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert client.get("/jobs/x" * 100).status_code == 404


def test_image_404_while_not_ready_then_served(client: TestClient, store: JobStore) -> None:
    job_id = client.post("/generate", json={**REQUEST, "output_format": "webp"}).json()["id"]
    response = client.get(f"/jobs/{job_id}/images/0")
    assert response.status_code == 404
    assert "no images yet" in response.json()["error"]["message"]

    assert store.claim(job_id, "w", 3)
    assert store.mark_succeeded(job_id, [b"RIFF-webp-bytes"])
    response = client.get(f"/jobs/{job_id}/images/0")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert response.content == b"RIFF-webp-bytes"
    assert client.get(f"/jobs/{job_id}/images/1").status_code == 404
    assert client.get(f"/jobs/{job_id}/images/-1").status_code == 404


def test_unknown_model_is_422_listing_served_models(client: TestClient, redis_client: Redis) -> None:
    publish_worker(redis_client, _worker("w1", "sd15", [Sampler.EULER]), heartbeat_seconds=5)
    response = client.post("/generate", json={**REQUEST, "model": "sdxl"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"] == "model: unknown model 'sdxl'; served models: sd15, tiny"
    # A model a live worker serves is accepted and goes to that model's queue.
    accepted = client.post("/generate", json={**REQUEST, "model": "sd15"})
    assert accepted.status_code == 202
    assert model_queue(redis_client, "sd15").job_ids == [accepted.json()["id"]]


def test_models_lists_live_workers_and_forgets_dead_ones(client: TestClient, redis_client: Redis) -> None:
    # The default model is listed without a worker, with its family and defaults.
    assert [(m["name"], m["workers"], m["family"]) for m in client.get("/models").json()] == [("tiny", 0, "sd15")]
    publish_worker(redis_client, _worker("w1", "tiny", [Sampler.EULER, Sampler.DDIM]), heartbeat_seconds=5)
    publish_worker(redis_client, _worker("w2", "tiny", [Sampler.EULER]), heartbeat_seconds=5)
    publish_worker(redis_client, _worker("w3", "sd15", [Sampler.LCM]), heartbeat_seconds=5)
    listed = {m["name"]: m for m in client.get("/models").json()}
    # Known only from its worker: the API holds it to the sd15 family's rules, and says so.
    assert listed["sd15"]["capabilities"] == FAMILIES[ModelFamily.SD15].capabilities()
    assert listed["sd15"] | {"defaults": None, "capabilities": None} == {
        "name": "sd15",
        "family": None,  # known only from its worker
        "defaults": None,
        "capabilities": None,
        "workers": 1,
        "worker_ids": ["w3"],
        "samplers": ["lcm"],
        "devices": ["cpu"],
        "loras": [],
    }
    assert listed["tiny"]["workers"] == 2
    assert listed["tiny"]["worker_ids"] == ["w1", "w2"]
    assert listed["tiny"]["samplers"] == ["ddim", "euler"]
    assert listed["tiny"]["defaults"] == {
        "width": 512,
        "height": 512,
        "steps": 25,
        "sampler": "euler_a",
        "guidance_scale": 7.5,
    }
    redis_client.delete(keys.worker_key("w3"))  # as if its heartbeat had expired
    assert [m["name"] for m in client.get("/models").json()] == ["tiny"]
    assert redis_client.smembers(keys.workers_key()) == {b"w1", b"w2"}


def test_health_and_readiness(client: TestClient, settings: Settings) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "redis": None}
    assert client.get("/readyz").status_code == 200
    down = TestClient(create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})))
    assert down.get("/healthz").status_code == 200
    response = down.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_lora_unknown_to_the_models_live_workers_is_422(client: TestClient, redis_client: Redis) -> None:
    worker = _worker("w1", "tiny", [Sampler.EULER]).model_copy(update={"loras": ["style", "sketch"]})
    publish_worker(redis_client, worker, heartbeat_seconds=5)
    refused = client.post("/generate", json={**REQUEST, "loras": [{"name": "anime", "scale": 0.7}]})
    assert refused.status_code == 422
    assert refused.json()["error"]["message"] == "loras: unknown adapter anime for model tiny; it has: sketch, style"
    accepted = client.post("/generate", json={**REQUEST, "loras": [{"name": "style", "scale": 0.7}]})
    assert accepted.status_code == 202
    assert accepted.json()["request"]["loras"] == [{"name": "style", "scale": 0.7}]
    assert client.get("/models").json()[0]["loras"] == ["sketch", "style"]


def test_reproducible_is_taken_as_json_and_as_a_multipart_part(client: TestClient) -> None:
    parts = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % pair
        for pair in ((b"prompt", b"x"), (b"reproducible", b"true"))
    )
    answers = [
        client.post("/generate", json={"prompt": "x", "reproducible": True}),
        client.post(
            "/generate", content=parts + b"--b--\r\n", headers={"content-type": "multipart/form-data; boundary=b"}
        ),
    ]
    for answer in answers:
        assert answer.status_code == 202, answer.text
        job = client.get(f"/jobs/{answer.json()['id']}").json()
        assert job["request"]["reproducible"] is True
        assert job["batch_size"] is None  # not run yet
    assert client.post("/generate", json={"prompt": "x", "reproducible": "maybe"}).status_code == 422
