"""Redis Sentinel failover under load, with real processes: a primary and a replica (AOF on), three sentinels, the API
and a worker (tiny model) that find the primary through the sentinels. The primary is SIGKILLed while jobs are being
submitted; every job acknowledged with 202 before the kill, and every one acknowledged after the failover, succeeds.

The API waits for one replica (`IMAGEGEN_REDIS_MIN_REPLICAS=1`) before its 202, so an acknowledged job is on the
replica that the sentinels promote. Once the old primary is gone the new one has no replica until the test starts
one; meanwhile submissions answer 503 (`unavailable` during the failover, then `not_replicated`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import stack_env
from tests.e2e.processes import Stack, wait_until
from tests.redis_servers import RedisProcesses, needs_sentinel

pytestmark = [pytest.mark.slow, needs_sentinel]

JOB = {"prompt": "failover", "width": 64, "height": 64, "steps": 2}
LONG = {"prompt": "running at the kill", "width": 384, "height": 384, "steps": 20}


class Submitter(threading.Thread):
    """POSTs a job every `interval` seconds and records each answer: (status code, error code or None, job id)."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        super().__init__(name="submitter", daemon=True)
        self.client = httpx.Client(base_url=url, timeout=60)
        self.interval = interval
        self.answers: list[tuple[float, int, str | None, str | None]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            sent = time.monotonic()
            response = self.client.post("/generate", json=JOB)
            body = response.json()
            if response.status_code == 202:
                self.answers.append((sent, 202, None, body["id"]))
            else:
                self.answers.append((sent, response.status_code, body["error"]["code"], None))
            self.stopped.wait(self.interval)
        self.client.close()

    def accepted(self, sent_after: float = 0.0, answered_before: float = float("inf")) -> list[str]:
        return [
            job
            for sent, status, _, job in self.answers
            if status == 202 and sent_after <= sent < answered_before and job
        ]


def test_primary_killed_mid_load_every_acknowledged_job_succeeds_after_failover(
    redis_processes: RedisProcesses, cache_dir: Path, tmp_path: Path
) -> None:
    primary = redis_processes.server()
    replica = redis_processes.server(replica_of=primary)
    sentinels = [
        redis_processes.sentinel(primary, quorum=2, down_after_ms=1000, failover_timeout_ms=3000) for _ in range(3)
    ]
    redis_processes.wait_replicas_known(sentinels, replicas=1)
    env = {
        **stack_env(cache_dir),
        # Nothing listens at the URL's address: with sentinels only its db index is used.
        "IMAGEGEN_REDIS_URL": "redis://127.0.0.1:1/0",
        "IMAGEGEN_REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in sentinels),
        "IMAGEGEN_REDIS_MIN_REPLICAS": "1",
        "IMAGEGEN_REDIS_REPLICA_TIMEOUT_MS": "1000",
        "IMAGEGEN_HEARTBEAT_SECONDS": "1",
        "IMAGEGEN_REAPER_SECONDS": "1",
    }
    stack = Stack(tmp_path, env)
    submitter = Submitter(stack.url, interval=0.25)
    try:
        started = time.monotonic()
        stack.wait_ready()
        ready = time.monotonic()
        done_before = stack.submit(**JOB)["id"]  # one job done before the kill: its result must survive too
        assert stack.wait_job(done_before)["status"] == "succeeded"
        # Mid-load: a longer job running, the submitter's jobs waiting in the queue behind it.
        long_job = stack.submit(**LONG)["id"]
        wait_until(lambda: stack.client.get(f"/jobs/{long_job}").json()["status"] == "running", 60, "the long job")
        submitter.start()
        wait_until(lambda: len(submitter.accepted()) >= 3, 60, "3 jobs queued behind it")
        statuses = {j: stack.client.get(f"/jobs/{j}").json()["status"] for j in [long_job, *submitter.accepted()]}
        unfinished = [job for job, status in statuses.items() if status != "succeeded"]
        killed_at = time.monotonic()
        redis_processes.kill(primary)
        before = [done_before, long_job, *submitter.accepted(answered_before=killed_at)]

        wait_until(
            lambda: redis_processes.primary_port(sentinels[0]) == replica, 30, "the sentinels to promote the replica"
        )
        redis_processes.server(
            replica_of=replica
        )  # a replica for the new primary, so submissions can be acknowledged again
        replicated_again = time.monotonic()
        wait_until(lambda: len(submitter.accepted(sent_after=replicated_again)) >= 5, 60, "5 jobs acknowledged after")
        submitter.stopped.set()
        submitter.join(timeout=60)
        after = submitter.accepted(sent_after=killed_at)

        submitted = time.monotonic()
        ends = {job: stack.wait_job(job, timeout=60) for job in [*before, *after]}
        ended = time.monotonic()
        not_succeeded = {job: end for job, end in ends.items() if end["status"] != "succeeded"}
        assert not not_succeeded, (
            f"{len(not_succeeded)} of {len(ends)} acknowledged jobs did not succeed: {not_succeeded}"
        )
        refused = [(status, code) for _, status, code, _ in submitter.answers if status != 202]
        assert set(refused) <= {(503, "unavailable"), (503, "not_replicated")}, refused
        assert len(before) >= 5 and len(after) >= 5
        assert long_job in unfinished and len(unfinished) >= 2, "killed with a job running and jobs queued"
        assert stack.client.get(ends[done_before]["images"][0]).status_code == 200, "a result from before the kill"
        first_after = min(sent for sent, status, _, _ in submitter.answers if status == 202 and sent >= killed_at)
        print(
            f"acknowledged before the kill: {len(before)} ({len(unfinished)} not yet done), "
            f"after: {len(after)}, all succeeded; refused meanwhile: {len(refused)} ({sorted(set(refused))}); "
            f"first 202 sent {first_after - killed_at:.1f} s after the kill; seconds: stack start "
            f"{ready - started:.1f}, load to kill {killed_at - ready:.1f}, kill to last submission "
            f"{submitted - killed_at:.1f}, then every job ended {ended - submitted:.1f}"
        )
    except BaseException:
        print(f"--- api ---\n{stack.api.log()}\n--- worker ---\n{stack.worker.log()}")
        raise
    finally:
        submitter.stopped.set()
        stack.stop()
