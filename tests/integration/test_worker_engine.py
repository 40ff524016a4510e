"""The worker's job lifecycle on the real Redis, in-process: success, a failure with a code, then success again."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from redis import Redis

from core.jobs import JobStore
from core.schemas import GenerateRequest, JobStatus
from core.settings import Settings
from worker.engine import GenerationEngine, error_code
from worker.health import WorkerState, WorkerStatus
from worker.loading import load_model


@pytest.fixture(scope="module")
def loaded(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))


@pytest.fixture
def engine(loaded, store: JobStore, settings: Settings) -> GenerationEngine:
    limited = settings.model_copy(update={"max_pixels": 96 * 96})
    return GenerationEngine(loaded, store, limited, "worker-test", WorkerStatus())


def _queue_job(store: JobStore, job_id: str, **fields) -> dict:
    request = GenerateRequest(**{"prompt": "a red circle", "width": 64, "height": 64, "steps": 3, "seed": 7, **fields})
    store.create(job_id, "tiny", request)
    return request.model_dump(mode="json")


def test_job_succeeds_with_images_of_the_requested_format(engine: GenerationEngine, store: JobStore) -> None:
    payload = _queue_job(store, "ok", num_images=2, output_format="jpeg", width=96, height=64)
    engine.run("ok", payload)
    job = store.get("ok")
    assert job.status is JobStatus.SUCCEEDED
    assert job.worker_id == "worker-test"
    assert job.progress.step == job.progress.total == 3
    assert len(job.images) == 2
    image = Image.open(io.BytesIO(store.get_image("ok", 1)))
    assert image.format == "JPEG"
    assert image.size == (96, 64)
    assert engine.status.state is WorkerState.READY  # BUSY only while the job ran


def test_failure_is_recorded_and_the_next_job_still_runs(
    engine: GenerationEngine, store: JobStore, redis_client: Redis
) -> None:
    # Over this worker's own pixel limit: the API (with a larger limit) accepted it, the worker refuses it.
    engine.run("big", _queue_job(store, "big", width=128, height=128))
    failed = store.get("big")
    assert failed.status is JobStatus.FAILED
    assert failed.error.code == "invalid_request"
    assert "over the limit of 9216 pixels" in failed.error.message
    assert redis_client.ttl("imagegen:job:big") <= engine.settings.result_ttl_seconds

    engine.run("next", _queue_job(store, "next"))
    assert store.get("next").status is JobStatus.SUCCEEDED


def test_warm_up_runs_at_native_size(engine: GenerationEngine) -> None:
    engine.warm_up()  # tiny: 64x64; must not touch Redis or any job


def test_error_codes() -> None:
    assert error_code(MemoryError()) == "out_of_memory"
    assert error_code(ValueError("height must be divisible by 8")) == "invalid_request"
    assert error_code(RuntimeError("boom")) == "internal"


def test_overlong_prompt_is_run_truncated_with_a_warning(engine: GenerationEngine, store: JobStore) -> None:
    long_prompt = "a red circle " * 40  # far over the tiny tokenizer's 77-token window
    engine.run("long", _queue_job(store, "long", prompt=long_prompt))
    job = store.get("long")
    assert job.status is JobStatus.SUCCEEDED
    assert len(job.warnings) == 1
    assert job.warnings[0].startswith("prompt is ")
    assert "reads the first 77" in job.warnings[0]
    engine.run("short", _queue_job(store, "short"))
    assert store.get("short").warnings == []


def test_overdue_job_expires_instead_of_running(engine: GenerationEngine, store: JobStore, redis_client: Redis) -> None:
    payload = _queue_job(store, "late", queue_ttl_seconds=1)
    redis_client.hset("imagegen:job:late", "expires_at", 0)  # as if it had waited past its TTL
    engine.run("late", payload)
    job = store.get("late")
    assert job.status is JobStatus.EXPIRED
    assert job.attempts == 0
