"""`create_app()`: the FastAPI application, its routers, error handlers and request guards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client.registry import CollectorRegistry
from redis import Redis

from core.object_store import image_store
from core.redis_connection import async_redis_client, redis_client
from core.settings import Settings, get_settings
from core.sharding import RedisShards
from service.api_docs import install_api_docs
from service.auth import AdminDep
from service.background import Sweeper
from service.errors import install_error_handlers
from service.guards import RequestGuard
from service.metrics import HttpMetrics, RedisStateCollector, metrics_response
from service.queue_view import QueueViews
from service.results import ResultImages
from service.routes import a1111, events, generate, health, jobs, models, openai_images, openai_models, playground
from service.routes.generate import GENERATE_MEDIA_TYPES
from service.slow_clients import ClientGone
from service.webhooks import WebhookDeliverer


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the recovery sweeper and the webhook deliverer with the server; stop them with it."""
    settings: Settings = app.state.settings
    workers: list[Any] = []
    shards: list[Redis] = app.state.shards.all()
    if settings.reaper_seconds > 0:
        workers.append(Sweeper(app.state.redis, settings, app.state.results.store))
        # Each shard's jobs are swept on it, and so are the bucket objects its jobs scheduled for deletion there.
        workers += [Sweeper(shard, settings, app.state.results.store) for shard in shards[1:]]
    if settings.webhook_deliver:
        # Job events queue their webhooks on the job's own Redis: one deliverer per Redis.
        workers += [WebhookDeliverer(shard, settings, results=app.state.results) for shard in shards]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        for client in app.state.async_shards.all():
            await client.aclose()
        await app.state.probe_redis.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; `settings` defaults to the environment's."""
    settings = settings or get_settings()
    app = FastAPI(
        title="imagegen",
        version="0.1.0",
        summary="Latent-diffusion image generation as a queued REST service.",
        lifespan=lifespan,
        docs_url=None,  # served by install_api_docs, with a Content-Security-Policy, when settings.api_docs
        redoc_url=None,
    )
    app.state.settings = settings
    # health_check_interval keeps pooled connections honest after a Redis restart.
    app.state.redis = redis_client(settings, health_check_interval=30, socket_timeout=10)
    # Event streams block in XREAD; the async client keeps them off the request thread pool.
    # Reads wait up to the stream's XREAD block (5 s) and must not time out before it.
    # Each waiting request holds one connection of this pool: size it for them (redis-py's default is 100).
    app.state.async_redis = async_redis_client(
        settings, health_check_interval=30, socket_timeout=30, max_connections=settings.max_waiting_requests
    )
    # With queues sharded by model (IMAGEGEN_REDIS_SHARDS), one client of each kind per Redis; the default Redis's
    # are the ones above.
    app.state.shards = RedisShards(
        settings, lambda shard: redis_client(shard, health_check_interval=30, socket_timeout=10), app.state.redis
    )
    app.state.make_async_shards = lambda: RedisShards(  # also for an event loop of its own (service/deps.py)
        settings,
        lambda shard: async_redis_client(
            shard, health_check_interval=30, socket_timeout=30, max_connections=settings.max_waiting_requests
        ),
    )
    app.state.async_shards = RedisShards(
        settings,
        lambda shard: async_redis_client(
            shard, health_check_interval=30, socket_timeout=30, max_connections=settings.max_waiting_requests
        ),
        app.state.async_redis,
    )
    # Redis, or a bucket (one boto3 client, thread-safe, for the process).
    app.state.results = ResultImages(image_store(settings, app.state.redis), settings, app.state.shards)
    app.state.queue_views = QueueViews()  # queue positions and ETAs of polled jobs, with a short per-model cache
    # /readyz pings on a pool of its own: readiness says whether Redis answers, whatever the waits hold.
    app.state.probe_redis = async_redis_client(settings, socket_timeout=settings.ready_timeout_seconds + 1)
    for router in (
        generate.router,
        jobs.router,
        events.router,
        models.router,
        health.router,
        playground.router,
        openai_images.router,
        openai_models.router,
        a1111.router,
    ):
        app.include_router(router)
    if settings.api_docs:
        install_api_docs(app)
    install_error_handlers(app)
    app.add_middleware(ClientGone)  # innermost: a body read cut short ends quietly, not as a 500
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        media_types={
            "/generate": GENERATE_MEDIA_TYPES,
            "/v1/images/generations": ("application/json",),
            "/v1/images/edits": ("multipart/form-data",),
            **{f"/sdapi/v1/{name}": ("application/json",) for name in a1111.JSON_BODY_ROUTES},
        },
    )
    app.add_middleware(HttpMetrics)  # outermost: it sees the guard's refusals too

    registry = CollectorRegistry()  # no auto-describe: registering must not touch Redis
    registry.register(RedisStateCollector(app.state.shards.all()))

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(caller: AdminDep) -> Response:
        """Prometheus text exposition."""
        return metrics_response(registry)

    return app
