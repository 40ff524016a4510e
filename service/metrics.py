"""API metrics: HTTP requests, submissions and refusals (module level), and Redis-backed gauges read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, CollectorRegistry
from redis import Redis
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.queueing import queue_depths
from core.workers import live_workers
from service.errors import error_code_for_status

HTTP_REQUESTS = Counter("imagegen_http_requests", "HTTP requests answered.", ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "imagegen_http_request_duration_seconds",
    "Time to answer an HTTP request (an event stream: its whole life).",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)
JOBS_SUBMITTED = Counter("imagegen_jobs_submitted", "Jobs accepted and queued.", ["model"])
JOBS_REJECTED = Counter("imagegen_jobs_rejected", "Submissions refused, by reason (the error code).", ["reason"])
# The routes that queue jobs, and the request-state key under which one records the job it queued.
SUBMISSION_PATHS = frozenset({"/generate", "/v1/images/generations", "/v1/images/edits"})
SUBMITTED_JOB_STATE = "submitted_job_id"


class RedisStateCollector:
    """`imagegen_queue_depth{queue}` and `imagegen_workers{model,state}`, read from each Redis of the deployment (one,
    or the shards of `IMAGEGEN_REDIS_SHARDS`: a model's queue and workers live on one of them) at each scrape."""

    def __init__(self, redis: list[Redis]) -> None:
        self.redis = redis

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families this collector exports (without values)."""
        yield GaugeMetricFamily("imagegen_queue_depth", "Jobs waiting in each model's queue.", labels=["queue"])
        yield GaugeMetricFamily("imagegen_workers", "Live workers by model and state.", labels=["model", "state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth, workers = self.describe()
        for name, count in (item for redis in self.redis for item in queue_depths(redis).items()):
            depth.add_metric([name], count)
        yield depth
        counts: dict[tuple[str, str], int] = {}
        for worker in (worker for redis in self.redis for worker in live_workers(redis)):
            counts[(worker.model, worker.state)] = counts.get((worker.model, worker.state), 0) + 1
        for (model, state), count in sorted(counts.items()):
            workers.add_metric([model, state], count)
        yield workers


def metrics_response(app_registry: CollectorRegistry) -> Response:
    """The process's metrics followed by the app's Redis-backed gauges, in the text exposition format."""
    return Response(generate_latest(REGISTRY) + generate_latest(app_registry), media_type=CONTENT_TYPE_LATEST)


class HttpMetrics:
    """ASGI middleware counting requests and timing them by route template (never the raw path: ids are unbounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], template).observe(time.perf_counter() - started)
            # A submission refused: an error before any job was queued (the OpenAI routes' later 499/504/500 are a
            # queued job's, which its route marks in the request state).
            queued = SUBMITTED_JOB_STATE in scope.get("state", {})
            if scope["method"] == "POST" and scope["path"] in SUBMISSION_PATHS and status >= 400 and not queued:
                JOBS_REJECTED.labels(error_code_for_status(status)).inc()
