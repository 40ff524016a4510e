"""`GET /models`: what live workers serve."""

from __future__ import annotations

from fastapi import APIRouter

from core.schemas import ModelInfo
from core.workers import live_workers, models_served
from service.auth import CallerDep
from service.deps import RedisDep

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo])
def list_models(redis: RedisDep, caller: CallerDep) -> list[ModelInfo]:
    """Models with at least one live worker, the samplers they accept and the devices they run on."""
    return models_served(live_workers(redis))
