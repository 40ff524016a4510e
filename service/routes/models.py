"""`GET /models`: the models this deployment knows, with their defaults, capabilities and live workers."""

from __future__ import annotations

from fastapi import APIRouter

from core.catalog import ModelEntry, entry_of, model_entries
from core.schemas import ModelCapabilities, ModelInfo, WorkerInfo
from core.settings import Settings
from core.workers import live_workers_of, models_served
from service.auth import CallerDep
from service.deps import SettingsDep, ShardsDep
from service.submission import known_models

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo])
def list_models(shards: ShardsDep, settings: SettingsDep, caller: CallerDep) -> list[ModelInfo]:
    """The default model, the models file's, and any a live worker serves: family, request defaults, capabilities
    (the rules its requests keep: modes, samplers, negative prompt, guidance, size step, prompt length, sizes; a
    model known only from its workers has the sd15 family's), and the live workers (ids, samplers, devices, LoRA
    adapters). A model with `workers: 0` answers 503 at submission unless the server queues for absent workers."""
    return model_infos(live_workers_of(shards.all()), settings)


def model_infos(workers: list[WorkerInfo], settings: Settings) -> list[ModelInfo]:
    """What `GET /models` lists, given the live workers (`GET /v1/models` lists the same models)."""
    entries = model_entries(settings)
    known: dict[str, tuple[str | None, dict]] = {}
    found: dict[str, ModelEntry] = {}
    for name in known_models(settings, workers, entries):
        entry = entry_of(settings, name, entries)
        known[name] = (entry.family.value, entry.defaults()) if entry else (None, {})
        found[name] = entry or ModelEntry(source=name)  # the API applies the sd15 family's rules to it
    return [
        info.model_copy(update={"capabilities": ModelCapabilities.model_validate(found[info.name].capabilities())})
        if info.name in found
        else info
        for info in models_served(workers, known)
    ]
