"""Queues sharded by model across two Redis primaries (two redis-server processes on loopback): each model's jobs,
queue and workers live only on its Redis, and the one API serves both models end to end, finding each job's Redis
from its id (status, events, images, cancel)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from redis import Redis

from core import keys
from core.sharding import model_tag
from tests.e2e.conftest import stack_env
from tests.e2e.processes import Process, Stack, free_port, wait_until
from tests.e2e.sse import read_events
from tests.redis_servers import RedisProcesses

pytestmark = [
    pytest.mark.slow,  # an API and two workers
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

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


def test_two_models_on_two_redis_primaries(cache_dir: Path, tmp_path: Path, redis_processes: RedisProcesses) -> None:
    first, second = redis_processes.server(), redis_processes.server()
    default, shard = Redis(port=first), Redis(port=second)
    (tmp_path / "models.toml").write_text(MODELS)
    env = {
        **stack_env(cache_dir),
        "IMAGEGEN_REDIS_URL": f"redis://127.0.0.1:{first}/0",
        "IMAGEGEN_REDIS_SHARDS": f"squares=redis://127.0.0.1:{second}/0",
        "IMAGEGEN_MODELS_FILE": str(tmp_path / "models.toml"),
        "IMAGEGEN_MODEL": "circles",
        "IMAGEGEN_QUEUE_WITHOUT_WORKERS": "false",
    }
    stack = Stack(tmp_path, env, {"IMAGEGEN_WORKER_ID": "worker-circles"})
    squares_env = {"IMAGEGEN_MODEL": "squares", "IMAGEGEN_WORKER_ID": "worker-squares"}
    squares_worker = Process(
        ["worker"], {**env, **squares_env, "IMAGEGEN_METRICS_PORT": str(free_port())}, tmp_path / "worker-sq.log"
    )
    try:
        stack.wait_ready()
        wait_until(
            lambda: all(m["workers"] for m in stack.client.get("/models").json()), 120, "both workers", interval=0.2
        )
        # Each worker registered on its model's Redis only.
        assert default.smembers(keys.workers_key()) == {b"worker-circles"}
        assert shard.smembers(keys.workers_key()) == {b"worker-squares"}

        circle, square = (stack.submit(prompt="x", model=model, seed=1) for model in ("circles", "squares"))
        assert square["id"].startswith(f"{model_tag('squares')}-") and "-" not in circle["id"]
        done = {job["model"]: stack.wait_job(job["id"]) for job in (circle, square)}
        assert {model: (job["status"], job["worker_id"]) for model, job in done.items()} == {
            "circles": ("succeeded", "worker-circles"),
            "squares": ("succeeded", "worker-squares"),
        }
        # The records, streams and queues are on their model's Redis and nowhere else.
        assert default.exists(keys.job_key(circle["id"])) and not shard.exists(keys.job_key(circle["id"]))
        assert shard.exists(keys.job_key(square["id"])) and not default.exists(keys.job_key(square["id"]))
        assert shard.exists(keys.job_events_key(square["id"])) and not default.exists(keys.job_events_key(square["id"]))
        assert b"rq:queue:imagegen.squares" in shard.smembers("rq:queues")
        assert b"rq:queue:imagegen.squares" not in default.smembers("rq:queues")

        for job in (circle, square):  # events and images are read from the job's Redis
            events = list(read_events(stack.client, job["id"]))
            assert [event.type for event in events][-1] == "succeeded"
            image = stack.client.get(f"/jobs/{job['id']}/images/0")
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert stack.client.delete(f"/jobs/{square['id']}").status_code == 409  # found on its Redis: it ended

        # A squares job canceled while queued behind others leaves the shard's queue and never runs.
        queued = [stack.submit(prompt="x", model="squares", seed=1, steps=40) for _ in range(3)]
        canceled = stack.client.delete(f"/jobs/{queued[-1]['id']}")
        assert canceled.status_code in (200, 202), canceled.text
        assert stack.wait_job(queued[-1]["id"])["status"] == "canceled"
        assert shard.hget(keys.job_key(queued[-1]["id"]), "status") == b"canceled"
    finally:
        squares_worker.stop()
        stack.stop()
