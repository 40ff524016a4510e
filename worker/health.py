"""The worker's own HTTP port: `/metrics` (Prometheus), `/healthz` and `/readyz` with the worker's state."""

from __future__ import annotations

import json
import threading
from collections import Counter
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class WorkerState(StrEnum):
    """STARTING while loading and warming up, READY for jobs, BUSY running one, FAILED when it cannot serve."""

    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    FAILED = "FAILED"


class WorkerStatus:
    """The state the health endpoints report; set by the worker's main thread."""

    def __init__(self) -> None:
        self.state = WorkerState.STARTING
        self.detail = ""
        self.redis_error: str | None = None  # set while Redis is unreachable: not ready, the model stays loaded
        # Admissions here not yet settled (claiming, computing, or being stored), counted per job: one job may be
        # here twice, a run whose result waits for Redis and the next attempt of the same job (the sweep re-queued
        # it meanwhile), and the first one settling must not drop the second from the heartbeat.
        self._admitted: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def current_jobs(self) -> set[str]:
        """The jobs the heartbeat names: admitted here and not yet settled."""
        with self._lock:
            return set(self._admitted)

    def admitted(self, job_id: str) -> None:
        """A run of `job_id` starts here (before its claim: from the instant it may be ours)."""
        with self._lock:
            self._admitted[job_id] += 1

    def settled(self, job_id: str) -> None:
        """A run of `job_id` here ended (stored, failed, let go, or never claimed)."""
        with self._lock:
            if self._admitted[job_id] <= 1:
                del self._admitted[job_id]
            else:
                self._admitted[job_id] -= 1

    @property
    def ready(self) -> bool:
        return self.state in (WorkerState.READY, WorkerState.BUSY) and self.redis_error is None


def serve_health(status: WorkerStatus, host: str, port: int) -> ThreadingHTTPServer:
    """Start the metrics and health server on a daemon thread; returns it (its `server_address` has the port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                ok = self.path == "/healthz" or status.ready
                state = {"state": status.state.value, "detail": status.detail, "redis": status.redis_error or "ok"}
                body = json.dumps(state).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes every few seconds: keep logs quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="imagegen-health", daemon=True).start()
    return server
