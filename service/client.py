"""A small HTTP client of the API: submit, poll until the job ends, fetch its images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled", "expired"}


class JobFailedError(RuntimeError):
    """The job ended without images."""


def wait_for_job(client: httpx.Client, job_id: str, *, timeout: float, interval: float = 0.25) -> dict[str, Any]:
    """Poll `GET /jobs/{id}` until the job is terminal; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/jobs/{job_id}")
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(interval)


def generate_to_files(
    base_url: str, body: dict[str, Any], output: Path, *, timeout: float
) -> tuple[dict[str, Any], list[Path]]:
    """Submit `body`, wait, and write each image next to `output` (`out.png`, `out-1.png`, ...)."""
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        response = client.post("/generate", json=body)
        if response.status_code != 202:
            raise JobFailedError(f"refused ({response.status_code}): {response.text}")
        job = wait_for_job(client, response.json()["id"], timeout=timeout)
        if job["status"] != "succeeded":
            raise JobFailedError(f"job {job['id']} {job['status']}: {job.get('error')}")
        paths = []
        for index, url in enumerate(job["images"]):
            path = output if index == 0 else output.with_name(f"{output.stem}-{index}{output.suffix}")
            image = client.get(url)
            image.raise_for_status()
            path.write_bytes(image.content)
            paths.append(path)
    return job, paths
