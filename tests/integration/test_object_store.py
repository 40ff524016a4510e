"""Images in an S3-compatible bucket (core/object_store.py), against moto's S3 server on loopback and the real Redis:
the store itself, the worker's finishing, the API's views, the expiry sweep and a store outage."""

from __future__ import annotations

import io
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from core import keys
from core.jobs import JobStore
from core.object_store import (
    RedisImageStore,
    ResultStoreUnavailableError,
    S3ImageStore,
    delete_due_objects,
    schedule_deletion,
)
from core.queueing import IdQueue, model_queue
from core.schemas import GenerateRequest, JobStatus
from core.settings import Settings
from service.app import create_app
from tests.s3_server import S3Server
from worker.engine import ActiveJob, GenerationEngine
from worker.health import WorkerStatus
from worker.pipeline.loading import load_model
from worker.pipeline.resident import ResidentPipeline


def _dead_endpoint() -> str:
    """An endpoint nothing listens on (connections are refused at once)."""
    from tests.e2e.processes import free_port

    return f"http://127.0.0.1:{free_port()}"


def test_result_store_setting_names_redis_or_a_bucket() -> None:
    assert Settings().result_bucket() is None
    assert Settings(result_store="s3://bkt").result_bucket() == ("bkt", "")
    assert Settings(result_store="s3://bkt/a/b/").result_bucket() == ("bkt", "a/b/")
    for wrong in ("s3://", "s3:///prefix", "gs://bkt", "bucket"):
        with pytest.raises(ValueError, match="result_store"):
            Settings(result_store=wrong)


# --- the store ----------------------------------------------------------------------------------------------------


def test_put_get_presigned_url_and_delete(s3_settings: Settings, s3_server: S3Server) -> None:
    store = S3ImageStore.from_settings(s3_settings.model_copy(update={"result_url_seconds": 120}))
    key = store.result_key("job1", 2, 0, "png")
    assert key == "results/jobs/job1/a2/0.png"  # under the prefix and the attempt
    store.put(key, b"\x89PNG-bytes", "image/png")
    assert store.get(key) == b"\x89PNG-bytes"

    url = store.url(key)
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.content == b"\x89PNG-bytes"
    assert fetched.headers["content-type"] == "image/png"
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["120"]
    # The signature is what opens it: the same object unsigned is refused.
    assert httpx.get(url.split("?", 1)[0]).status_code == 403

    store.delete([key, "results/jobs/job1/a2/9.png"])  # an absent key is fine
    assert store.get(key) is None
    assert httpx.get(url).status_code == 404
    assert s3_server.keys(store.bucket) == []


def test_presigned_urls_last_the_result_ttl_capped_at_seven_days(s3_settings: Settings) -> None:
    assert S3ImageStore.from_settings(s3_settings.model_copy(update={"result_ttl_seconds": 600})).url_seconds == 600
    long_ttl = s3_settings.model_copy(update={"result_ttl_seconds": 30 * 24 * 3600})
    assert S3ImageStore.from_settings(long_ttl).url_seconds == 7 * 24 * 3600


def test_redis_store_keeps_todays_keys(redis_client: Redis) -> None:
    store = RedisImageStore(redis_client, ttl=60)
    key = store.result_key("job1", 3, 1, "png")
    assert key == keys.job_image_key("job1", 1)
    store.put(key, b"bytes", "image/png")
    assert store.get(key) == b"bytes"
    assert 0 < redis_client.ttl(key) <= 60
    assert store.url(key) is None  # the API serves it
    store.delete([key])
    assert store.get(key) is None


def test_an_unreachable_store_fails_within_its_bounded_tries(s3_settings: Settings) -> None:
    dead = s3_settings.model_copy(
        update={
            "s3_endpoint_url": _dead_endpoint(),
            "result_store_timeout_seconds": 0.5,
            "result_store_max_attempts": 2,
        }
    )
    store = S3ImageStore.from_settings(dead)
    with pytest.raises(ResultStoreUnavailableError, match="object store unavailable"):
        store.put("k", b"x", "image/png")
    with pytest.raises(ResultStoreUnavailableError):
        store.get("k")


def test_sweep_deletes_due_objects_and_keeps_the_rest(
    s3_settings: Settings, s3_server: S3Server, redis_client: Redis
) -> None:
    store = S3ImageStore.from_settings(s3_settings)
    for name in ("results/a", "results/b", "results/c"):
        store.put(name, b"x", "image/png")
    now = time.time()
    schedule_deletion(redis_client, ["results/a", "results/b"], now - 1)
    schedule_deletion(redis_client, ["results/c"], now + 3600)
    assert sorted(delete_due_objects(redis_client, store, now)) == ["results/a", "results/b"]
    assert s3_server.keys(store.bucket) == ["results/c"]
    assert redis_client.zrange(keys.stored_objects_key(), 0, -1) == [b"results/c"]
    assert delete_due_objects(redis_client, store, now) == []  # nothing more is due


def test_sweep_keeps_due_objects_through_a_store_outage(s3_settings: Settings, redis_client: Redis) -> None:
    dead = S3ImageStore.from_settings(
        s3_settings.model_copy(update={"s3_endpoint_url": _dead_endpoint(), "result_store_max_attempts": 1})
    )
    schedule_deletion(redis_client, ["results/a"], time.time() - 1)
    with pytest.raises(ResultStoreUnavailableError):
        delete_due_objects(redis_client, dead)
    assert redis_client.zrange(keys.stored_objects_key(), 0, -1) == [b"results/a"]  # the next sweep tries again


# --- the worker and the API ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))


def _engine(loaded, store: JobStore, settings: Settings) -> GenerationEngine:
    resident = ResidentPipeline(loaded, family=settings.model_family, lora_dir=settings.lora_dir)
    return GenerationEngine(resident, store, settings, "worker-s3", WorkerStatus())


def _run(engine: GenerationEngine, store: JobStore, job_id: str, **fields) -> None:
    request = GenerateRequest(**{"prompt": "a red circle", "width": 64, "height": 64, "steps": 2, "seed": 7, **fields})
    store.create(job_id, "tiny", request)
    job, _ = IdQueue.dequeue_any([model_queue(store.redis, "tiny").rq], None, connection=store.redis)
    engine.run(job.id)
    engine.drain()


def test_worker_puts_results_in_the_bucket_and_the_api_presigns_them(
    loaded, s3_settings: Settings, s3_server: S3Server, redis_client: Redis
) -> None:
    store = JobStore.from_settings(redis_client, s3_settings)
    engine = _engine(loaded, store, s3_settings)
    _run(engine, store, "s3job", num_images=2)
    job = store.get("s3job")
    assert job is not None and job.status is JobStatus.SUCCEEDED, job
    bucket = s3_settings.result_bucket()[0]
    assert s3_server.keys(bucket) == ["results/jobs/s3job/a1/0.png", "results/jobs/s3job/a1/1.png"]
    assert not redis_client.exists(keys.job_image_key("s3job", 0))  # no image bytes through Redis
    assert len(redis_client.zrange(keys.stored_objects_key(), 0, -1)) == 2  # both due for deletion

    with TestClient(create_app(s3_settings)) as client:
        shown = client.get("/jobs/s3job").json()
        assert all(url.startswith(s3_server.endpoint_url) for url in shown["images"])
        image = Image.open(io.BytesIO(httpx.get(shown["images"][1]).content))
        assert (image.format, image.size) == ("PNG", (64, 64))
        # The API's path still serves the bytes (fetched from the bucket).
        proxied = client.get("/jobs/s3job/images/1")
        assert proxied.status_code == 200
        assert proxied.content == httpx.get(shown["images"][1]).content
        # The event stream's `succeeded` event carries presigned URLs too.
        events = client.get("/jobs/s3job/events").text
        assert f"{s3_server.endpoint_url}/{bucket}/results/jobs/s3job/a1/0.png?" in events

    proxy = s3_settings.model_copy(update={"result_urls": "proxy"})
    with TestClient(create_app(proxy)) as client:
        shown = client.get("/jobs/s3job").json()
        assert shown["images"] == ["/jobs/s3job/images/0", "/jobs/s3job/images/1"]
        assert Image.open(io.BytesIO(client.get(shown["images"][0]).content)).format == "PNG"


def test_store_outage_fails_the_job_with_its_code(loaded, s3_settings: Settings, redis_client: Redis) -> None:
    dead = s3_settings.model_copy(
        update={
            "s3_endpoint_url": _dead_endpoint(),
            "result_store_timeout_seconds": 0.5,
            "result_store_max_attempts": 2,
        }
    )
    store = JobStore.from_settings(redis_client, dead)
    _run(_engine(loaded, store, dead), store, "outage")
    job = store.get("outage")
    assert job is not None and job.status is JobStatus.FAILED
    assert job.error is not None and job.error.code == "result_store_unavailable"
    assert job.images == []


def test_a_run_that_lost_its_job_deletes_what_it_put(
    loaded, s3_settings: Settings, s3_server: S3Server, redis_client: Redis
) -> None:
    store = JobStore.from_settings(redis_client, s3_settings)
    engine = _engine(loaded, store, s3_settings)
    request = GenerateRequest(prompt="x", width=64, height=64, steps=2, seed=1)
    store.create("lost", "tiny", request)
    claim = store.claim("lost", "worker-s3", 2)
    assert claim.attempt == 1
    store.mark_failed("lost", "sweeper", "worker_lost", "given up meanwhile")  # the job moved on without the run
    job = ActiveJob("lost", request, claim.attempt, reporter=None, inputs={})  # type: ignore[arg-type]
    assert engine._put_objects(job, [b"png"], [False]) is False
    assert s3_server.keys(s3_settings.result_bucket()[0]) == []
    assert store.get("lost").status is JobStatus.FAILED  # untouched


def test_input_images_go_to_the_bucket_and_the_worker_reads_them(
    loaded, s3_settings: Settings, s3_server: S3Server, redis_client: Redis
) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, format="PNG")
    with TestClient(create_app(s3_settings)) as client:
        response = client.post(
            "/generate",
            data={"prompt": "a red square", "steps": "4", "strength": "0.5", "seed": "3"},
            files={"init_image": ("in.png", picture.getvalue(), "image/png")},
        )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    bucket = s3_settings.result_bucket()[0]
    assert s3_server.keys(bucket) == [f"results/jobs/{job_id}/inputs/init_image"]
    assert not redis_client.exists(keys.job_input_key(job_id, "init_image"))

    store = JobStore.from_settings(redis_client, s3_settings)
    engine = _engine(loaded, store, s3_settings)
    queued, _ = IdQueue.dequeue_any([model_queue(redis_client, "tiny").rq], None, connection=redis_client)
    engine.run(queued.id)
    engine.drain()
    job = store.get(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED, job.error
    assert f"results/jobs/{job_id}/a1/0.png" in s3_server.keys(bucket)


def test_submission_answers_503_when_the_store_is_away(s3_settings: Settings, redis_client: Redis) -> None:
    dead = s3_settings.model_copy(update={"s3_endpoint_url": _dead_endpoint(), "result_store_max_attempts": 1})
    picture = io.BytesIO()
    Image.new("RGB", (64, 64)).save(picture, format="PNG")
    with TestClient(create_app(dead)) as client:
        response = client.post(
            "/generate",
            data={"prompt": "x", "steps": "2", "strength": "0.5"},
            files={"init_image": ("in.png", picture.getvalue(), "image/png")},
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "result_store_unavailable"
    assert response.headers["retry-after"] == "5"
    assert model_queue(redis_client, "tiny").count == 0  # nothing was queued


def test_a_succeeded_webhook_carries_presigned_urls_made_at_delivery(
    s3_settings: Settings, s3_server: S3Server, redis_client: Redis
) -> None:
    from service.results import ResultImages
    from service.webhooks import WebhookDeliverer
    from tests.integration.test_webhooks import SECRET, Receiver, _drive

    settings = s3_settings.model_copy(update={"webhook_secret": SECRET, "webhook_allow_hosts": ["127.0.0.1"]})
    images = S3ImageStore.from_settings(settings)
    store = JobStore.from_settings(redis_client, settings)
    receiver = Receiver()
    deliverer = WebhookDeliverer(redis_client, settings, results=ResultImages(images, settings))
    try:
        store.create("hooked", "tiny", GenerateRequest(prompt="a cat", seed=1, webhook_url=receiver.url("/hook")))
        assert store.claim("hooked", "worker-a", total_steps=4).attempt == 1
        images.put(images.result_key("hooked", 1, 0, "png"), b"png-bytes", "image/png")
        assert store.mark_succeeded("hooked", [], attempt=1, stored=1)
        _drive(deliverer, lambda: len(receiver.at("/hook")) == 1)
    finally:
        deliverer.stop()
        receiver.close()
    [url] = receiver.at("/hook")[0].payload["data"]["images"]
    assert url.startswith(f"{s3_server.endpoint_url}/{images.bucket}/results/jobs/hooked/a1/0.png?")
    assert httpx.get(url).content == b"png-bytes"
