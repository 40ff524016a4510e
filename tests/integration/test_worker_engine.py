"""The worker's job lifecycle on the real Redis, in-process: success, a failure with a code, then success again."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image
from redis import Redis

from core import keys
from core.event_stream import read_events
from core.jobs import JobStore
from core.queueing import IdQueue, model_queue
from core.schemas import GenerateRequest, JobStatus
from core.settings import Settings
from worker import metrics
from worker.engine import GenerationEngine, error_code
from worker.health import WorkerState, WorkerStatus
from worker.pipeline.generation import generate_images
from worker.pipeline.loading import DEMO_MODEL_DIR, load_model
from worker.pipeline.provenance import model_fingerprint
from worker.pipeline.resident import ResidentPipeline


@pytest.fixture(scope="module")
def loaded(cache_dir):
    return load_model(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))


def _engine(loaded, store: JobStore, settings: Settings, worker_id: str) -> GenerationEngine:
    resident = ResidentPipeline(loaded, family=settings.model_family, lora_dir=settings.lora_dir)
    return GenerationEngine(resident, store, settings, worker_id, WorkerStatus())


@pytest.fixture
def engine(loaded, store: JobStore, settings: Settings) -> GenerationEngine:
    limited = settings.model_copy(update={"max_pixels": 96 * 96})
    return _engine(loaded, store, limited, "worker-test")


def _queue_job(store: JobStore, job_id: str, **fields) -> dict:
    request = GenerateRequest(**{"prompt": "a red circle", "width": 64, "height": 64, "steps": 3, "seed": 7, **fields})
    store.create(job_id, "tiny", request)
    return request.model_dump(mode="json")


def _dequeue(store: JobStore, job_id: str) -> str:
    """What the worker's RQ loop does before it hands a job to the engine: move the queue's head to RQ's intermediate
    list (RQ's own dequeue)."""
    job, _ = IdQueue.dequeue_any([model_queue(store.redis, "tiny").rq], None, connection=store.redis)
    assert job.id == job_id
    return job_id


def test_job_succeeds_with_images_of_the_requested_format(engine: GenerationEngine, store: JobStore) -> None:
    _queue_job(store, "ok", num_images=2, output_format="jpeg", width=96, height=64)
    engine.run(_dequeue(store, "ok"))
    engine.drain()
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
    _queue_job(store, "big", width=128, height=128)
    engine.run(_dequeue(store, "big"))
    engine.drain()
    failed = store.get("big")
    assert failed.status is JobStatus.FAILED
    assert failed.error.code == "invalid_request"
    assert "over the limit of 9216 pixels" in failed.error.message
    assert redis_client.ttl("imagegen:job:big") <= engine.settings.result_ttl_seconds

    _queue_job(store, "next")
    engine.run(_dequeue(store, "next"))
    engine.drain()
    assert store.get("next").status is JobStatus.SUCCEEDED


def test_warm_up_runs_at_native_size(engine: GenerationEngine, loaded, redis_client: Redis) -> None:
    unet = loaded.pipeline.unet
    latent_sides: list[tuple[int, int]] = []
    hook = unet.register_forward_pre_hook(lambda module, args: latent_sides.append(tuple(args[0].shape[-2:])))
    try:
        engine.warm_up()
    finally:
        hook.remove()
    side = 64 // loaded.pipeline.vae_scale_factor  # tiny's native size is 64x64 pixels
    assert len(latent_sides) == engine.settings.warmup_steps  # one UNet call per step
    assert set(latent_sides) == {(side, side)}
    assert redis_client.dbsize() == 0  # no job, no Redis write


def test_error_codes() -> None:
    assert error_code(MemoryError()) == "out_of_memory"
    assert error_code(ValueError("height must be divisible by 8")) == "invalid_request"
    assert error_code(RuntimeError("boom")) == "internal"


def test_overlong_prompt_is_run_truncated_with_a_warning(engine: GenerationEngine, store: JobStore) -> None:
    long_prompt = "a red circle " * 40  # far over the tiny tokenizer's 77-token window
    _queue_job(store, "long", prompt=long_prompt)
    engine.run(_dequeue(store, "long"))
    engine.drain()
    job = store.get("long")
    assert job.status is JobStatus.SUCCEEDED
    assert len(job.warnings) == 1
    assert job.warnings[0].startswith("prompt is ")
    assert "reads the first 77" in job.warnings[0]
    _queue_job(store, "short")
    engine.run(_dequeue(store, "short"))
    engine.drain()
    assert store.get("short").warnings == []


def test_overlong_prompt_is_read_whole_without_a_warning_when_chunked(
    loaded, store: JobStore, settings: Settings
) -> None:
    chunking = _engine(loaded, store, settings.model_copy(update={"long_prompts": "chunk"}), "worker-chunk")
    _queue_job(store, "long", prompt="a red circle " * 40)
    chunking.run(_dequeue(store, "long"))
    chunking.drain()
    job = store.get("long")
    assert job.status is JobStatus.SUCCEEDED
    assert job.warnings == []


def test_the_request_is_read_from_the_job_record(
    engine: GenerationEngine, store: JobStore, redis_client: Redis
) -> None:
    # The RQ job carries only the id: what runs is what the record says, validated once at admission.
    _queue_job(store, "recorded-size", width=72)
    engine.run(_dequeue(store, "recorded-size"))
    engine.drain()
    assert Image.open(io.BytesIO(store.get_image("recorded-size", 0))).size == (72, 64)

    _queue_job(store, "corrupt")
    redis_client.hset(keys.job_key("corrupt"), "request", '{"prompt": ""}')  # no longer a valid request
    engine.run(_dequeue(store, "corrupt"))
    assert redis_client.hget(keys.job_key("corrupt"), "status") == b"failed"
    assert b"invalid_request" in redis_client.hget(keys.job_key("corrupt"), "error")

    engine.run("never-created")  # its record expired before a worker took it: skipped, nothing written
    assert not redis_client.exists(keys.job_key("never-created"))
    assert engine.status.current_jobs == set()


def test_overdue_job_expires_instead_of_running(engine: GenerationEngine, store: JobStore, redis_client: Redis) -> None:
    _queue_job(store, "late", queue_ttl_seconds=1)
    redis_client.hset("imagegen:job:late", "expires_at", 0)  # as if it had waited past its TTL
    engine.run(_dequeue(store, "late"))
    engine.drain()
    job = store.get("late")
    assert job.status is JobStatus.EXPIRED
    assert job.attempts == 0


def _enqueue(store: JobStore, job_id: str, **fields) -> dict:
    payload = _queue_job(store, job_id, **fields)
    return payload


@pytest.fixture
def batching(loaded, store: JobStore, settings: Settings) -> GenerationEngine:
    batched = settings.model_copy(update={"max_batch": 4, "batch_wait_ms": 0})
    return _engine(loaded, store, batched, "worker-batch")


def test_compatible_queued_jobs_run_as_one_batch(batching: GenerationEngine, loaded, store: JobStore) -> None:
    _queue_job(store, "first", seed=10)
    _enqueue(store, "mate-1", seed=11, prompt="a blue square", num_images=2)
    _enqueue(store, "other-size", seed=12, width=72)
    _enqueue(store, "mate-2", seed=13, negative_prompt="red")
    before = metrics.BATCH_SIZE.labels("tiny")._sum.get()
    batching.run(_dequeue(store, "first"))
    batching.drain()
    for job_id in ("first", "mate-1", "mate-2"):
        job = store.get(job_id)
        assert job.status is JobStatus.SUCCEEDED, job_id
        types = [entry.type for entry in read_events(store.redis, job_id)]
        assert types[:2] == ["queued", "started"] and types[-1] == "succeeded" and "step" in types
    assert metrics.BATCH_SIZE.labels("tiny")._sum.get() - before == 4  # 1 + 2 + 1 images in one call
    assert [store.get(job_id).batch_size for job_id in ("first", "mate-1", "mate-2")] == [3, 3, 3]
    assert store.get("other-size").status is JobStatus.QUEUED
    assert model_queue(store.redis, "tiny").job_ids == ["other-size"]
    # Each job's pixels are what it gets alone.
    alone = generate_images(
        loaded.pipeline, dict(loaded.pipeline.scheduler.config), GenerateRequest(**_payload_of(store, "mate-1"))
    )
    got = Image.open(io.BytesIO(store.get_image("mate-1", 1)))
    assert np.abs(np.asarray(got).astype(int) - np.asarray(alone[1]).astype(int)).max() <= 2


def test_a_reproducible_job_runs_alone_and_its_rerun_is_bit_exact(batching: GenerationEngine, store: JobStore) -> None:
    _queue_job(store, "alone", seed=21, reproducible=True)
    _enqueue(store, "would-be-mate", seed=22)
    batching.run(_dequeue(store, "alone"))
    batching.drain()
    assert store.get("alone").status is JobStatus.SUCCEEDED
    assert store.get("alone").batch_size == 1
    assert store.get("would-be-mate").status is JobStatus.QUEUED  # not taken as its mate
    batching.run(_dequeue(store, "would-be-mate"))
    batching.drain()
    # A re-run from the record (every field as recorded) gives the same bytes.
    _queue_job(store, "again", **_payload_of(store, "alone"))
    batching.run(_dequeue(store, "again"))
    batching.drain()
    assert store.get("again").batch_size == 1
    assert store.get_image("again", 0) == store.get_image("alone", 0)


def _payload_of(store: JobStore, job_id: str) -> dict:
    return store.get(job_id).request.model_dump(mode="json")


def test_canceling_one_job_of_a_batch_leaves_the_others(batching: GenerationEngine, store: JobStore) -> None:
    _queue_job(store, "keep", seed=1, width=256, height=256, steps=30)
    _enqueue(store, "drop", seed=2, width=256, height=256, steps=30)
    thread = threading.Thread(target=batching.run, args=(_dequeue(store, "keep"),))
    thread.start()
    deadline = time.monotonic() + 60
    while store.get("drop").progress.step < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.cancel("drop").value == "cancel_requested"
    thread.join(timeout=120)
    batching.drain()
    dropped, kept = store.get("drop"), store.get("keep")
    assert dropped.status is JobStatus.CANCELED
    assert dropped.progress.step < 30
    assert kept.status is JobStatus.SUCCEEDED
    assert kept.progress.step == 30


def test_job_records_its_provenance(engine: GenerationEngine, store: JobStore, cache_dir) -> None:
    _queue_job(store, "recorded", sampler="dpmpp_2m_karras")
    engine.run(_dequeue(store, "recorded"))
    engine.drain()
    record = store.get("recorded").provenance
    assert record.model == "tiny"
    assert len(record.model_hash) == 64
    assert record.model_hash == model_fingerprint(str(cache_dir / "tiny-v2"))  # stable for the same files
    assert record.model_hash != model_fingerprint(str(DEMO_MODEL_DIR))
    assert record.scheduler == "DPMSolverMultistepScheduler"
    assert record.scheduler_config["use_karras_sigmas"] is True
    assert record.scheduler_config["beta_schedule"] == "scaled_linear"
    assert set(record.libraries) == {"torch", "diffusers", "transformers", "imagegen"}
    assert (record.device, record.dtype) == ("cpu", "float32")


def test_lora_applies_to_its_batch_only(loaded, store: JobStore, settings: Settings, tmp_path) -> None:
    from tests.lora_files import write_random_lora

    write_random_lora(loaded.source, tmp_path / "loras", "style", seed=1)
    write_random_lora(loaded.source, tmp_path / "loras", "other", seed=2)
    configured = settings.model_copy(update={"lora_dir": tmp_path / "loras"})
    engine = _engine(loaded, store, configured, "worker-lora")

    def pixels(job_id: str, **fields) -> np.ndarray:
        _queue_job(store, job_id, **fields)
        engine.run(_dequeue(store, job_id))
        engine.drain()
        job = store.get(job_id)
        assert job.status is JobStatus.SUCCEEDED, job.error
        return np.asarray(Image.open(io.BytesIO(store.get_image(job_id, 0)))).astype(int)

    before = pixels("plain-before")
    styled = pixels("styled", loras=[{"name": "style", "scale": 1.0}])
    both = pixels("both", loras=[{"name": "style", "scale": 1.0}, {"name": "other", "scale": 0.5}])
    half = pixels("half", loras=[{"name": "style", "scale": 0.5}])
    after = pixels("plain-after")
    assert np.abs(styled - before).max() > 10
    assert np.abs(both - styled).max() > 0
    assert np.abs(half - styled).max() > 0
    assert np.array_equal(after, before)  # removed after its batch: exactly the pixels of before any LoRA

    _queue_job(store, "unknown", loras=[{"name": "nope"}])
    engine.run(_dequeue(store, "unknown"))
    failed = store.get("unknown")
    assert failed.status is JobStatus.FAILED
    assert failed.error.code == "invalid_request"
    assert failed.error.message == "loras: unknown adapter nope; this worker has: other, style"


@pytest.mark.parametrize("flag_everything", [True, False])
def test_safety_checker_marks_what_it_filters(
    flag_everything: bool, store: JobStore, settings: Settings, cache_dir, tmp_path
) -> None:
    from tests.safety_files import write_test_safety_checker

    source = write_test_safety_checker(tmp_path / "checker", flag_everything=flag_everything)
    configured = settings.model_copy(update={"safety_checker": True, "safety_checker_source": str(source)})
    checked = load_model(configured)
    assert checked.pipeline.safety_checker is not None
    engine = _engine(checked, store, configured, "worker-safety")
    _queue_job(store, "checked", num_images=2)
    engine.run(_dequeue(store, "checked"))
    engine.drain()
    job = store.get("checked")
    assert job.status is JobStatus.SUCCEEDED
    pixels = np.asarray(Image.open(io.BytesIO(store.get_image("checked", 0))))
    if flag_everything:
        assert job.content_filtered == [True, True]
        assert pixels.max() == 0  # diffusers blacked it out; the job says so
        events = store.redis.xrange(keys.job_events_key("checked"))
        assert b'"content_filtered":[true,true]' in events[-1][1][b"data"]
    else:
        assert job.content_filtered == []
        assert pixels.max() > 0


def test_a_models_own_safety_checker_is_left_out_unless_turned_on(settings: Settings, tmp_path) -> None:
    from tests.safety_files import write_test_safety_checker

    source = write_test_safety_checker(tmp_path / "checker", flag_everything=True)
    checked = settings.model_copy(update={"safety_checker": True, "safety_checker_source": str(source)})
    with_checker = load_model(checked)
    with_checker.pipeline.save_pretrained(str(tmp_path / "model"))  # a model folder that ships its own checker
    own = settings.model_copy(update={"model": str(tmp_path / "model"), "safety_checker_source": "/nowhere"})
    assert load_model(own).pipeline.safety_checker is None
    assert load_model(own.model_copy(update={"safety_checker": True})).pipeline.safety_checker is not None
