"""Faults with real processes: a worker SIGKILLed mid-job, a busy worker SIGTERMed, Redis killed and restarted."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import RedisError

from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Process, Stack, free_port, wait_until
from tests.e2e.sse import read_events

# Each test starts its own API and worker (and a second worker, or its own redis-server) and kills them.
pytestmark = pytest.mark.slow

LONG = {"prompt": "a long job", "width": 512, "height": 512, "sampler": "euler"}
FAST_RECOVERY = {"IMAGEGEN_HEARTBEAT_SECONDS": "1", "IMAGEGEN_REAPER_SECONDS": "1"}


@pytest.fixture
def stack(cache_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    with started_stack(tmp_path, {**stack_env(cache_dir), **FAST_RECOVERY}) as running:
        yield running


def _second_worker(stack: Stack, cache_dir: Path, tmp_path: Path, env: dict[str, str] | None = None) -> Process:
    worker_env = {**stack_env(cache_dir), **FAST_RECOVERY, "IMAGEGEN_METRICS_PORT": str(free_port()), **(env or {})}
    return Process(["worker"], worker_env, tmp_path / "worker-2.log")


def _running_at_step(stack: Stack, job_id: str, step: int) -> bool:
    job = stack.client.get(f"/jobs/{job_id}").json()
    return job["status"] == "running" and job["progress"]["step"] >= step


def test_sigkilled_worker_job_is_requeued_and_completed(stack: Stack, cache_dir: Path, tmp_path: Path) -> None:
    job = stack.submit(**LONG, steps=30)
    wait_until(lambda: _running_at_step(stack, job["id"], 2), 60, "the job to run")
    stack.worker.popen.send_signal(signal.SIGKILL)
    stack.worker.popen.wait()
    replacement = _second_worker(stack, cache_dir, tmp_path)
    try:
        done = stack.wait_job(job["id"], timeout=120)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        types = [e.type for e in read_events(stack.client, job["id"])]
        assert types.count("started") == 2
        assert "requeued" in types
        assert types[-1] == "succeeded"
    finally:
        replacement.stop()


def test_sigterm_finishes_the_current_job_takes_no_new_one_and_exits_0(stack: Stack) -> None:
    current = stack.submit(**LONG, steps=16)
    wait_until(lambda: _running_at_step(stack, current["id"], 1), 60, "the job to run")
    waiting = stack.submit(prompt="next", width=64, height=64, steps=2)
    stack.worker.popen.send_signal(signal.SIGTERM)
    assert stack.worker.popen.wait(timeout=120) == 0, stack.worker.log()
    assert stack.client.get(f"/jobs/{current['id']}").json()["status"] == "succeeded"
    assert stack.client.get(f"/jobs/{waiting['id']}").json()["status"] == "queued"


def _answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url).ping())
    except RedisError:
        return False


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_killed_and_restarted_with_append_only_keeps_jobs_and_results(cache_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: _answers(redis_url), 30, "redis")
    env = {**stack_env(cache_dir), **FAST_RECOVERY, "IMAGEGEN_REDIS_URL": redis_url}
    stack = Stack(tmp_path, env)
    try:
        stack.wait_ready()
        finished = stack.wait_job(stack.submit(prompt="before", width=64, height=64, steps=2, seed=3)["id"])
        assert finished["status"] == "succeeded"
        image_before = stack.client.get(finished["images"][0]).content

        # Keep the worker busy so the next jobs wait in the queue, then kill Redis outright, and keep it away for
        # longer than a blip (several of the worker's reconnection tries and missed heartbeats).
        busy = stack.submit(**LONG, steps=12)
        queued = [stack.submit(prompt=f"queued {i}", width=64, height=64, steps=2) for i in range(2)]
        server.send_signal(signal.SIGKILL)
        server.wait()
        health = f"http://127.0.0.1:{stack.metrics_port}/readyz"
        not_ready = wait_until(lambda: httpx.get(health).status_code == 503, 30, "the worker to report not ready")
        assert not_ready and stack.worker.popen.poll() is None  # it stays, model loaded, and waits for Redis
        time.sleep(4)
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(lambda: _answers(redis_url), 30, "redis again")

        # The job that was running completes (its result held, or re-run once its lease lapsed), and so do the
        # queued ones, on the same worker process.
        for job in [busy, *queued]:
            done = stack.wait_job(job["id"], timeout=180)
            assert done["status"] == "succeeded", done
        assert stack.worker.popen.poll() is None, stack.worker.log()
        wait_until(lambda: httpx.get(health).status_code == 200, 30, "the worker to report ready again")
        assert stack.client.get(finished["images"][0]).content == image_before
    finally:
        stack.stop()
        server.terminate()
        server.wait()
