"""Liveness and readiness, both on the event loop: neither waits for a thread of the pool, so neither hangs when the
pool is busy (a liveness probe that timed out there would restart a loaded API and drop every waiting client)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from core.schemas import Health
from core.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no I/O: it answers whatever Redis does)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> Health | JSONResponse:
    """Ready to accept jobs: Redis answers within `IMAGEGEN_READY_TIMEOUT_SECONDS`. 503 with the reason otherwise."""
    # Read from the app's state, not through the sync dependencies: FastAPI runs those on the thread pool.
    settings: Settings = request.app.state.settings
    redis: AsyncRedis = request.app.state.probe_redis
    timeout = settings.ready_timeout_seconds
    try:
        await asyncio.wait_for(redis.ping(), timeout)
    except TimeoutError:
        reason = f"no answer within {timeout:g}s"
    except (RedisError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
    else:
        return Health(status="ok", redis="ok")
    return JSONResponse(Health(status="unavailable", redis=reason).model_dump(), status_code=503)
