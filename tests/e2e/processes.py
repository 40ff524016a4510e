"""Starting the real `imagegen` processes for end-to-end tests, and waiting on them over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

IMAGEGEN = [sys.executable, "-m", "launcher.main"]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class Process:
    """One `imagegen` subcommand running as its own process, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            [*IMAGEGEN, *args], env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the process and wait for it; kill it if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


class Stack:
    """`imagegen api` and `imagegen worker` started for real against one Redis."""

    def __init__(self, tmp: Path, env: dict[str, str], worker_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = Process(["api", "--port", str(self.port)], env, tmp / "api.log")
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        worker_env = {"IMAGEGEN_METRICS_PORT": str(self.metrics_port), **(worker_env or {})}
        self.worker = Process(["worker"], {**env, **worker_env}, tmp / "worker.log")
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the API answers ready and lists the worker's model."""
        try:
            wait_until(lambda: self.client.get("/readyz").status_code == 200, timeout, "the API")
            wait_until(lambda: any(m["workers"] for m in self.client.get("/models").json()), timeout, "a live worker")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- api ---\n{self.api.log()}\n--- worker ---\n{self.worker.log()}") from None

    def submit(self, **body: Any) -> dict[str, Any]:
        """POST /generate and return the accepted job."""
        response = self.client.post("/generate", json=body)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll until the job is terminal."""

        def terminal() -> dict[str, Any] | None:
            job = self.client.get(f"/jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed", "canceled", "expired") else None

        return wait_until(terminal, timeout, f"job {job_id}", interval=0.05)

    def stop(self) -> None:
        """Stop both processes."""
        self.client.close()
        self.worker.stop()
        self.api.stop()
