"""`GET /models`: the models this deployment knows, with their defaults and live workers."""

from __future__ import annotations

from fastapi import APIRouter

from core.catalog import entry_of, model_entries
from core.schemas import ModelInfo
from core.workers import live_workers, models_served
from service.auth import CallerDep
from service.deps import RedisDep, SettingsDep
from service.submission import known_models

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo])
def list_models(redis: RedisDep, settings: SettingsDep, caller: CallerDep) -> list[ModelInfo]:
    """The default model, the models file's, and any a live worker serves: family, request defaults, and the live
    workers (ids, samplers, devices, LoRA adapters). A model with `workers: 0` answers 503 at submission unless the
    server queues for absent workers."""
    workers = live_workers(redis)
    entries = model_entries(settings)
    known = {}
    for name in known_models(settings, workers, entries):
        entry = entry_of(settings, name, entries)
        known[name] = (entry.family.value, entry.defaults()) if entry else (None, {})
    return models_served(workers, known)
