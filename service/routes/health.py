"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from core.schemas import Health
from service.deps import RedisDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(redis: RedisDep) -> Health | JSONResponse:
    """Ready to accept jobs: Redis answers. 503 otherwise."""
    try:
        redis.ping()
    except RedisError as exc:
        return JSONResponse(Health(status="unavailable", redis=str(exc)).model_dump(), status_code=503)
    return Health(status="ok", redis="ok")
