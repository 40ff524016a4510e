"""Load: 2,000 submissions from 50 concurrent clients against a low queue cap, with real processes."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack

pytestmark = pytest.mark.slow  # 2,000 submissions against its own API and worker

CLIENTS, PER_CLIENT = 50, 40
BODY = {"prompt": "load", "width": 64, "height": 64, "steps": 1, "sampler": "euler"}


@pytest.fixture
def stack(cache_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    with started_stack(
        tmp_path, {**stack_env(cache_dir), "IMAGEGEN_MAX_QUEUE_DEPTH": "10", "IMAGEGEN_LOG_LEVEL": "WARNING"}
    ) as running:
        yield running


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _client_run(url: str, count: int) -> list[tuple[int, str | None, str | None]]:
    results = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(count):
            response = client.post("/generate", json=BODY)
            body = response.json()
            job_or_code = body["id"] if response.status_code == 202 else body["error"]["code"]
            results.append((response.status_code, job_or_code, response.headers.get("retry-after")))
    return results


def _burst(url: str, per_client: int) -> list[tuple[int, str | None, str | None]]:
    with ThreadPoolExecutor(CLIENTS) as pool:
        return [row for rows in pool.map(lambda _: _client_run(url, per_client), range(CLIENTS)) for row in rows]


def test_every_accepted_job_ends_and_every_refusal_is_429_with_retry_after(stack: Stack) -> None:
    warm = _burst(stack.url, 4)  # 200 submissions: the API reaches its working size
    rss_after_warm_up = _rss_kib(stack.api.popen.pid)
    rest = _burst(stack.url, PER_CLIENT - 4)
    rss_at_end = _rss_kib(stack.api.popen.pid)
    results = warm + rest
    assert len(results) == CLIENTS * PER_CLIENT

    statuses = {status for status, _, _ in results}
    assert statuses <= {202, 429}, statuses
    refused = [(code, retry) for status, code, retry in results if status == 429]
    accepted = [job_id for status, job_id, _ in results if status == 202]
    assert refused and accepted
    assert all(code == "queue_full" and retry is not None and int(retry) >= 1 for code, retry in refused)

    for job_id in accepted:
        assert stack.wait_job(job_id, timeout=300)["status"] == "succeeded"
    growth_mib = (rss_at_end - rss_after_warm_up) / 1024
    print(f"\n{len(accepted)} accepted, {len(refused)} refused; API RSS growth {growth_mib:.1f} MiB after warm-up")
    assert growth_mib < 25, f"API memory grew {growth_mib:.1f} MiB over 1,800 submissions"
