"""The OpenAI routes in process on the real Redis: the edit form's refusals, `GET /v1/models`, and the image stream
driven by a job's real event stream (the worker's writes made through the job store)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import REGISTRY
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core.events import PreviewEvent
from core.jobs import JobStore
from core.object_store import image_store
from core.schemas import GenerateRequest, JobStatus, Sampler, WorkerInfo
from core.settings import Settings
from core.workers import publish_worker
from service.app import create_app
from service.auth import hash_key
from service.openai_stream import image_events
from service.results import ResultImages
from tests.conftest import TEST_REDIS_URL

EDITS = "/v1/images/edits"


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _png(size: tuple[int, int] = (64, 64), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("imagegen_jobs_rejected_total", {"reason": reason}) or 0.0


def test_edit_form_refusals_name_the_part_and_count_as_rejected(client: TestClient, store: JobStore) -> None:
    image = ("in.png", _png(), "image/png")
    before = _rejected("invalid_request")
    cases = [
        ({"mask": ("m.png", _png(mode="RGBA"), "image/png")}, {"prompt": "x"}, "image", "required"),
        ({"image": ("a.txt", b"hello", "text/plain")}, {"prompt": "x"}, "image", "not an image"),
        ({"image": image, "markup": image}, {"prompt": "x"}, "markup", "not supported"),
        ({"image": image}, {"prompt": "x", "image": "text"}, "image", "must be a file part"),
        ({"image": image}, {}, "prompt", "Field required"),
        ({"image": image}, {"prompt": "x", "n": "9"}, "n", "less than or equal to 8"),
        ({"image": image}, {"prompt": "x", "n": "2", "stream": "true"}, "n", "stream gives one image"),
        ({"image": image}, {"prompt": "x", "partial_images": "4"}, "partial_images", "less than or equal to 3"),
        ({"image": image}, {"prompt": "x", "output_format": "gif"}, "output_format", "'png', 'jpeg' or 'webp'"),
        ({"image": image}, {"prompt": "x", "background": "transparent"}, "background", "'auto' or 'opaque'"),
        ({"image": image}, {"prompt": "x", "strength": "0"}, "strength", "greater than 0"),
        ({"image": image}, {"prompt": "x", "size": "2048x2048"}, "size", "pixels"),
        ({"image": image, "mask": ("m.png", _png((32, 32), "RGBA"), "image/png")}, {"prompt": "x"}, "mask", "32x32"),
    ]
    for files, data, param, says in cases:
        error = _error(client.post(EDITS, files=files, data=data), 422)
        assert (error["param"], error["type"]) == (param, "invalid_request_error"), (data, error)
        assert says in error["message"], (data, error)
    assert _rejected("invalid_request") - before == len(cases)
    assert store.redis.dbsize() == 0  # nothing was queued


def test_models_in_openai_shape_with_auth(settings: Settings, redis_client: Redis) -> None:
    api = TestClient(create_app(settings.model_copy(update={"api_key_hashes": [hash_key("k")]})))
    assert _error(api.get("/v1/models"), 401)["type"] == "authentication_error"
    started = datetime.now(UTC) - timedelta(hours=1)
    for worker_id, at in (("w1", started), ("w2", started + timedelta(minutes=5))):
        info = WorkerInfo(
            id=worker_id,
            model="org/some-model",
            source="org/some-model",
            samplers=[Sampler.EULER],
            device="cpu",
            dtype="float32",
            state="ready",
            started_at=at,
            heartbeat_at=datetime.now(UTC),
        )
        publish_worker(redis_client, info, 30)
    headers = {"Authorization": "Bearer k"}
    listed = api.get("/v1/models", headers=headers).json()
    assert listed["object"] == "list"
    by_id = {model["id"]: model for model in listed["data"]}
    assert set(by_id) == {model["name"] for model in api.get("/models", headers=headers).json()}
    assert by_id["org/some-model"] == {
        "id": "org/some-model",
        "object": "model",
        "created": int(started.timestamp()),  # when its first worker started
        "owned_by": "imagegen",
    }
    assert by_id["tiny"]["created"] == 0  # no worker serves it
    assert api.get("/v1/models/org/some-model", headers=headers).json()["id"] == "org/some-model"
    error = _error(api.get("/v1/models/nope", headers=headers), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")


# --- the stream, on a job whose worker's writes the test makes ---


def _preview(step: int) -> PreviewEvent:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 9), (200, 10, 10)).save(buffer, format="WEBP")
    data = base64.b64encode(buffer.getvalue()).decode()
    return PreviewEvent(step=step, content_type="image/webp", width=8, height=9, data=data)


def _running_job(store: JobStore, job_id: str, output_format: str = "jpeg") -> None:
    request = GenerateRequest(prompt="x", seed=1, width=64, height=72, steps=4, output_format=output_format)
    store.create(job_id, "tiny", request)
    store.claim(job_id, "w", 4)


def _events(store: JobStore, settings: Settings, job_id: str, partial_images: int, timeout: float) -> list[dict]:
    """The stream's events as (event name, data) dicts, read to the end."""

    async def read() -> list[dict]:
        redis = AsyncRedis.from_url(TEST_REDIS_URL)
        results = ResultImages(image_store(settings, store.redis), settings)
        job = store.get(job_id)
        assert job is not None
        try:
            stream = image_events(
                redis,
                store,
                results,
                job,
                kind="image_edit",
                partial_images=partial_images,
                timeout=timeout,
                path=EDITS,
            )
            return [{"event": sse.event, **json.loads(sse.data)} async for sse in stream]
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_stream_sends_at_most_partial_images_previews_then_the_image(store: JobStore, settings: Settings) -> None:
    _running_job(store, "j")
    for step in (1, 2, 3):
        store.publish("j", _preview(step))
    store.mark_succeeded("j", [b"the image"])
    events = _events(store, settings, "j", partial_images=2, timeout=10)
    assert [event["event"] for event in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert [event["type"] for event in events] == [event["event"] for event in events]
    for index, event in enumerate(events[:2]):
        image = Image.open(io.BytesIO(base64.b64decode(event["b64_json"])))
        # The 8x9 latent preview, at the image's size and in its format.
        assert (image.format, image.size, event["partial_image_index"]) == ("JPEG", (64, 72), index)
    done = events[-1]
    assert base64.b64decode(done["b64_json"]) == b"the image"
    assert (done["size"], done["output_format"], done["usage"]["total_tokens"]) == ("64x72", "jpeg", 0)


def test_a_failed_job_ends_the_stream_with_an_openai_error_event(store: JobStore, settings: Settings) -> None:
    _running_job(store, "j")
    store.mark_failed("j", "w", "out_of_memory", "the device ran out of memory")
    events = _events(store, settings, "j", partial_images=3, timeout=10)
    assert events == [
        {
            "event": "error",
            "type": "error",
            "error": {
                "message": "the device ran out of memory",
                "type": "server_error",
                "param": None,
                "code": "out_of_memory",
            },
        }
    ]


def test_the_deadline_cancels_the_job_and_says_so(store: JobStore, settings: Settings) -> None:
    _running_job(store, "j")
    events = _events(store, settings, "j", partial_images=0, timeout=0.5)
    assert [(event["event"], event["error"]["code"]) for event in events] == [("error", "timeout")]
    assert store.cancel_requested("j")  # running: canceled at its next step


def test_a_client_that_goes_away_cancels_its_job(store: JobStore, settings: Settings) -> None:
    store.create("j", "tiny", GenerateRequest(prompt="x", seed=1, width=64, height=64, steps=4))
    store.publish("j", _preview(1))

    async def read_one_then_leave() -> None:
        redis = AsyncRedis.from_url(TEST_REDIS_URL)
        results = ResultImages(image_store(settings, store.redis), settings)
        job = store.get("j")
        assert job is not None
        got_one = anyio.Event()

        async def consume() -> None:
            stream = image_events(
                redis, store, results, job, kind="image_generation", partial_images=2, timeout=60, path=EDITS
            )
            async for _ in stream:
                got_one.set()

        try:
            # As sse-starlette does on a disconnect: cancel the task group the stream runs in.
            async with anyio.create_task_group() as group:
                group.start_soon(consume)
                await got_one.wait()
                group.cancel_scope.cancel()
        finally:
            await redis.aclose()

    asyncio.run(read_one_then_leave())
    job = store.get("j")
    assert job is not None and job.status is JobStatus.CANCELED  # it was queued: canceled at once
