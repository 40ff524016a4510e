"""`POST /generate` with `Prefer: wait` on the real Redis: answered when the job ends within the wait (200, images
inline on request), else 202 as without it; the job is finished meanwhile the way a worker does, through the store."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from core.jobs import JobStore
from core.queueing import model_queue
from core.settings import Settings
from service.app import create_app
from tests.e2e.processes import wait_until

BODY = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2, "num_images": 2}
PNGS = [b"\x89PNG first", b"\x89PNG second"]


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_prefer_wait_seconds": 10}))) as api:
        yield api


def _succeed(store: JobStore, job_id: str) -> None:
    assert store.claim(job_id, "worker-a", 2)
    assert store.mark_succeeded(job_id, PNGS)


def _fail(store: JobStore, job_id: str) -> None:
    assert store.claim(job_id, "worker-a", 2)
    assert store.mark_failed(job_id, "worker-a", "out_of_memory", "CUDA out of memory")


def _worker(redis: Redis, store: JobStore, finish: Callable[[JobStore, str], None]) -> threading.Thread:
    """A thread that, like a worker, takes the next queued job and ends it with `finish` while the request waits."""

    def run() -> None:
        [job_id] = wait_until(lambda: model_queue(redis, "tiny").job_ids, 10, "the job queued")
        finish(store, job_id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_job_that_ends_in_time_is_answered_200_with_its_images_inline(
    client: TestClient, redis_client: Redis, store: JobStore
) -> None:
    worker = _worker(redis_client, store, _succeed)
    response = client.post("/generate?response_format=b64_json", json=BODY, headers={"Prefer": "wait=5"})
    worker.join()
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=5"
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "succeeded"
    assert [base64.b64decode(image) for image in job["images_b64"]] == PNGS
    assert "images_b64" not in client.get(f"/jobs/{job['id']}").json()  # only in this answer

    # Without response_format: the same 200, images as URLs only.
    worker = _worker(redis_client, store, _succeed)
    response = client.post("/generate", json=BODY, headers={"Prefer": "wait"})
    worker.join()
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=10"  # bare `wait`: the server's longest
    assert "images_b64" not in response.json()
    assert response.json()["images"] == [f"/jobs/{response.json()['id']}/images/{i}" for i in range(2)]


def test_a_job_that_fails_in_time_is_answered_200_with_its_error(
    client: TestClient, redis_client: Redis, store: JobStore
) -> None:
    worker = _worker(redis_client, store, _fail)
    response = client.post("/generate?response_format=b64_json", json=BODY, headers={"Prefer": "wait=5"})
    worker.join()
    assert response.status_code == 200
    job = response.json()
    assert (job["status"], job["error"]["code"]) == ("failed", "out_of_memory")
    assert "images_b64" not in job


def test_a_job_still_queued_after_the_wait_is_answered_202_and_kept(client: TestClient, store: JobStore) -> None:
    response = client.post("/generate", json=BODY, headers={"Prefer": "respond-async, wait=1"})
    assert response.status_code == 202
    assert response.headers["preference-applied"] == "wait=1"
    job = response.json()
    assert job["status"] == "queued"
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert store.get(job["id"]).status.value == "queued"  # unlike the OpenAI route, nobody cancels it


def test_the_wait_is_capped_by_the_setting(settings: Settings, redis_client: Redis) -> None:
    capped = settings.model_copy(update={"max_prefer_wait_seconds": 1})
    with TestClient(create_app(capped)) as api:
        response = api.post("/generate", json=BODY, headers={"Prefer": "wait=3600"})
        assert (response.status_code, response.headers["preference-applied"]) == (202, "wait=1")
    off = settings.model_copy(update={"max_prefer_wait_seconds": 0})
    with TestClient(create_app(off)) as api:
        response = api.post("/generate", json=BODY, headers={"Prefer": "wait=5"})
        assert response.status_code == 202
        assert "preference-applied" not in response.headers  # not honoured: said by its absence


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=1.5", "wait=-1", "wait=0", "respond-async", "return=minimal"])
def test_preferences_it_cannot_honour_are_ignored(client: TestClient, prefer: str) -> None:
    # RFC 7240: a preference the server cannot apply is ignored, never an error; the job is queued as without it.
    response = client.post("/generate", json=BODY, headers={"Prefer": prefer})
    assert response.status_code == 202
    assert "preference-applied" not in response.headers
    assert response.json()["status"] == "queued"


def test_an_unknown_response_format_is_422_naming_it(client: TestClient, redis_client: Redis) -> None:
    response = client.post("/generate?response_format=png", json=BODY, headers={"Prefer": "wait=1"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "response_format"
    assert model_queue(redis_client, "tiny").count == 0  # refused before anything was queued


def test_an_idempotent_replay_of_an_ended_job_answers_200_at_once(client: TestClient, store: JobStore) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/generate", json=BODY, headers=headers)
    assert first.status_code == 202
    _succeed(store, first.json()["id"])

    replay = client.post("/generate?response_format=b64_json", json=BODY, headers={**headers, "Prefer": "wait=5"})
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert [base64.b64decode(image) for image in replay.json()["images_b64"]] == PNGS
