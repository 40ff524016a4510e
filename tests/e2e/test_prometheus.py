"""A real Prometheus scrapes the running API and worker while tiny jobs run; its query API sees what happened."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack, free_port, wait_until

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (.ci/run does)")

SCRAPE = """
global:
  scrape_interval: 500ms
scrape_configs:
  - job_name: imagegen-api
    static_configs: [{targets: ["127.0.0.1:%(api)d"]}]
  - job_name: imagegen-worker
    static_configs: [{targets: ["127.0.0.1:%(worker)d"]}]
"""


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with started_stack(tmp_path_factory.mktemp("observed"), stack_env(cache_dir)) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "prometheus.yml").write_text(SCRAPE % {"api": stack.port, "worker": stack.metrics_port})
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_until(lambda: client.get("/-/ready").status_code == 200, 60, "prometheus")
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _query(prometheus: httpx.Client, expr: str) -> float | None:
    result = prometheus.get("/api/v1/query", params={"query": expr}).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_sees_steps_and_queue_depth(stack: Stack, prometheus: httpx.Client) -> None:
    wait_until(lambda: _query(prometheus, 'sum(up{job=~"imagegen-.*"})') == 2, 30, "both targets up")
    # A slow job first, so the ones behind it wait in the queue through several scrapes.
    slow = {"prompt": "slow", "width": 512, "height": 512, "steps": 20, "sampler": "euler"}
    quick = {"prompt": "quick", "width": 64, "height": 64, "sampler": "euler"}
    jobs = [stack.submit(**slow)] + [stack.submit(**quick, steps=steps) for steps in (3, 5, 7)]
    for job in jobs:
        assert stack.wait_job(job["id"])["status"] == "succeeded"
    steps_run = 20 + 3 + 5 + 7

    # Scrapes every 500 ms, and a job's counters move just after its record does: wait for each to settle.
    expected = {
        "sum(imagegen_denoise_step_seconds_count)": steps_run,
        'sum(imagegen_jobs_total{outcome="succeeded"})': 4,
        "sum(imagegen_images_generated_total)": 4,
        'sum(imagegen_jobs_submitted_total{model="tiny"})': 4,
        'sum(imagegen_workers{model="tiny"})': 1,
        'sum(imagegen_job_phase_seconds_count{phase="vae_decode"})': 4,
    }
    for expr, value in expected.items():
        wait_until(lambda expr=expr, value=value: _query(prometheus, expr) == value, 30, f"{expr} == {value}")
    assert _query(prometheus, "max_over_time(imagegen_queue_depth[5m])") > 0
    assert _query(prometheus, 'sum(imagegen_http_requests_total{route="/jobs/{job_id}",method="GET"})') > 0


def test_worker_health_port(stack: Stack) -> None:
    assert httpx.get(f"{stack.metrics_url}/healthz").json()["state"] in ("READY", "BUSY")
    assert httpx.get(f"{stack.metrics_url}/readyz").status_code == 200
    assert "imagegen_denoise_step_seconds_bucket" in httpx.get(f"{stack.metrics_url}/metrics").text


def test_rejections_are_counted(stack: Stack) -> None:
    before = httpx.get(f"{stack.url}/metrics").text
    assert stack.client.post("/generate", json={"prompt": "", "steps": 2}).status_code == 422
    after = httpx.get(f"{stack.url}/metrics").text
    assert _sample(after, 'imagegen_jobs_rejected_total{reason="invalid_request"}') == (
        _sample(before, 'imagegen_jobs_rejected_total{reason="invalid_request"}') + 1
    )


def _sample(exposition: str, series: str) -> float:
    for row in exposition.splitlines():
        if row.startswith(series + " "):
            return float(row.split()[-1])
    return 0.0
