"""Queues sharded by model, in process, on redis-server processes of the test's own (a default Redis and a shard):
a key's caps hold across shards, the model lists read every shard's workers, and a shard named by its Sentinel
master is found through the sentinels. End to end with real workers: tests/e2e/test_redis_shards.py."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.queueing import model_queue
from core.samplers import Sampler
from core.settings import Settings
from core.sharding import model_tag, redis_for_model
from core.workers import publish_worker
from service.app import create_app
from service.auth import RATE_WINDOW_SECONDS, Caller, check_submission_quota, hash_key
from service.errors import ApiError
from tests.integration.test_api import _worker
from tests.redis_servers import RedisProcesses, needs_sentinel

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

BODY = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2}
ALICE = "alice-secret-key"
ALICE_ID = hash_key(ALICE)[:16]
AS_ALICE = {"Authorization": f"Bearer {ALICE}"}


def _sharded(settings: Settings, default: int, shard: int, **update: object) -> Settings:
    """`tiny` (the default model) on the Redis on port `default`, `squares` on the one on port `shard`."""
    return settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{default}/0",
            "redis_shards": {"squares": f"redis://127.0.0.1:{shard}/0"},
            **update,
        }
    )


def _keyed(settings: Settings, **limits: int) -> TestClient:
    app = create_app(settings.model_copy(update={"api_key_hashes": [hash_key(ALICE)], **limits}))
    return TestClient(app, raise_server_exceptions=False)


def _post(api: TestClient, model: str) -> tuple[int, str]:
    """The status of Alice's submission to `model`, and its job id (202) or error code."""
    response = api.post("/generate", json={**BODY, "model": model}, headers=AS_ALICE)
    body = response.json()
    return response.status_code, body["id"] if response.status_code == 202 else body["error"]["code"]


def _keyed_on_two_redis(
    redis_processes: RedisProcesses, settings: Settings, **caps: int
) -> tuple[TestClient, Redis, Redis]:
    """An API for Alice's key with `caps`, `tiny` on a default Redis and `squares` on a shard; and both Redis."""
    default_port, shard_port = redis_processes.server(), redis_processes.server()
    api = _keyed(_sharded(settings, default_port, shard_port), **caps)
    return api, Redis(port=default_port), Redis(port=shard_port)


def test_a_keys_active_job_cap_counts_its_jobs_on_every_redis(
    redis_processes: RedisProcesses, settings: Settings
) -> None:
    api, default, shard = _keyed_on_two_redis(
        redis_processes, settings, max_active_jobs_per_key=3, rate_limit_per_minute=100
    )

    accepted = [_post(api, model) for model in ("tiny", "squares", "squares")]
    assert [status for status, _ in accepted] == [202, 202, 202]
    active = keys.api_key_active_jobs_key(ALICE_ID)
    assert (default.scard(active), shard.scard(active)) == (1, 2), "each job in the set on its own Redis"
    # 3 in all: refused on both models, though neither Redis holds 3.
    assert [_post(api, model) for model in ("tiny", "squares")] == [(429, "too_many_active_jobs")] * 2
    # A job canceled on the shard frees a slot for either model.
    squares_job = accepted[1][1]
    assert squares_job.startswith(f"{model_tag('squares')}-")
    assert api.delete(f"/jobs/{squares_job}", headers=AS_ALICE).status_code in (200, 202)
    assert shard.scard(active) == 1
    assert _post(api, "tiny")[0] == 202
    assert _post(api, "squares") == (429, "too_many_active_jobs")


def test_the_rate_limit_counts_submissions_to_every_model_on_the_default_redis(
    redis_processes: RedisProcesses, settings: Settings
) -> None:
    api, default, shard = _keyed_on_two_redis(
        redis_processes, settings, max_active_jobs_per_key=100, rate_limit_per_minute=4
    )
    window = int(time.time() // RATE_WINDOW_SECONDS)
    if time.time() % RATE_WINDOW_SECONDS > RATE_WINDOW_SECONDS - 2:  # the window would turn over mid-test
        time.sleep(3)
        window += 1

    statuses = [_post(api, model)[0] for model in ("squares", "tiny", "squares", "squares")]
    assert statuses == [202] * 4
    assert _post(api, "squares") == (429, "rate_limited")
    assert _post(api, "tiny") == (429, "rate_limited")
    rate_key = keys.api_key_rate_key(ALICE_ID, window)
    assert int(default.get(rate_key) or 0) == 6 and not shard.exists(rate_key), "one counter, on the default Redis"


def test_the_asyncio_quota_check_reads_every_redis_at_once(redis_processes: RedisProcesses, settings: Settings) -> None:
    default_port, shard_port = redis_processes.server(), redis_processes.server()
    active = keys.api_key_active_jobs_key("k")
    Redis(port=default_port).sadd(active, "job-a")
    Redis(port=shard_port).sadd(active, "job-b")
    caller = Caller(key_id="k", admin=False)

    async def check(cap: int) -> str:
        clients = [AsyncRedis(port=default_port), AsyncRedis(port=shard_port)]
        try:
            limits = {"max_active_jobs_per_key": cap, "rate_limit_per_minute": 100}
            await check_submission_quota(caller, clients, settings.model_copy(update=limits))
            return "accepted"
        except ApiError as exc:
            return exc.code
        finally:
            for client in clients:
                await client.aclose()

    assert asyncio.run(check(3)) == "accepted"
    assert asyncio.run(check(2)) == "too_many_active_jobs"  # one job on each Redis
    rate_key = keys.api_key_rate_key("k", int(time.time() // RATE_WINDOW_SECONDS))
    assert not Redis(port=shard_port).exists(rate_key)


def test_model_lists_name_a_model_whose_only_workers_are_on_a_shard(
    redis_processes: RedisProcesses, settings: Settings
) -> None:
    default_port, shard_port = redis_processes.server(), redis_processes.server()
    api = TestClient(create_app(_sharded(settings, default_port, shard_port)), raise_server_exceptions=False)

    def listed() -> dict[str, object]:
        return {
            "models": {m["name"]: m["workers"] for m in api.get("/models").json()},
            "openai": {m["id"] for m in api.get("/v1/models").json()["data"]},
            "a1111": {m["title"] for m in api.get("/sdapi/v1/sd-models").json()},
        }

    assert listed() == {"models": {"tiny": 0}, "openai": {"tiny"}, "a1111": {"tiny"}}
    switch = {"sd_model_checkpoint": "squares"}
    assert api.post("/sdapi/v1/options", json=switch).status_code == 422  # not known anywhere yet

    publish_worker(Redis(port=shard_port), _worker("worker-squares", "squares", [Sampler.EULER]), heartbeat_seconds=60)
    assert listed() == {
        "models": {"squares": 1, "tiny": 0},
        "openai": {"tiny", "squares"},
        "a1111": {"tiny", "squares"},
    }
    assert api.post("/sdapi/v1/options", json=switch).status_code == 200
    assert api.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "squares"


@needs_sentinel
def test_a_shard_named_by_its_sentinel_master_gets_its_models_jobs(
    redis_processes: RedisProcesses, settings: Settings
) -> None:
    default_port, shard_port = redis_processes.server(), redis_processes.server()
    sentinel = redis_processes.sentinel(default_port, quorum=1)  # monitors the default Redis as `mymaster`
    assert Redis(port=sentinel).sentinel_monitor("imagegen-squares", "127.0.0.1", shard_port, 1)
    settings = settings.model_copy(
        update={
            "redis_url": "redis://127.0.0.1:1/0",  # unused with sentinels but for its db: nothing listens on port 1
            "redis_sentinels": [f"127.0.0.1:{sentinel}"],
            "redis_shards": {"squares": "sentinel://imagegen-squares/3"},
        }
    )
    api = TestClient(create_app(settings), raise_server_exceptions=False)

    circle, square = (api.post("/generate", json={**BODY, "model": m}).json() for m in ("tiny", "squares"))
    assert square["id"].startswith(f"{model_tag('squares')}-")
    on_default, on_shard = Redis(port=default_port, db=0), Redis(port=shard_port, db=3)
    assert on_shard.exists(keys.job_key(square["id"])) and not on_default.exists(keys.job_key(square["id"]))
    assert square["id"] in model_queue(on_shard, "squares").job_ids
    assert on_default.exists(keys.job_key(circle["id"])) and not on_shard.exists(keys.job_key(circle["id"]))
    assert api.get(f"/jobs/{square['id']}").json()["status"] == "queued"  # read back through the sentinel
    # A worker of the model finds the same primary.
    assert redis_for_model(settings, "squares").exists(keys.job_key(square["id"]))
