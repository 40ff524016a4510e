"""`GET /v1/models` and `GET /v1/models/{id}`: the models `GET /models` lists, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from core.schemas import WorkerInfo
from core.workers import live_workers_of
from service.auth import CallerDep
from service.deps import SettingsDep, ShardsDep
from service.errors import ApiError, OpenAIErrorResponse
from service.routes.models import model_infos

router = APIRouter(tags=["openai"])

OWNER = "imagegen"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse} for status in (401, 404, 500, 503)
}


class OpenAIModel(BaseModel):
    """One model, as OpenAI describes it."""

    id: str = Field(description="The name a request's `model` takes (`GET /models` `name`).")
    object: Literal["model"] = "model"
    created: int = Field(description="When its first live worker started (Unix seconds); 0 while none serves it.")
    owned_by: str = OWNER


class OpenAIModelList(BaseModel):
    """OpenAI's list of models."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


def _openai_models(workers: list[WorkerInfo], names: list[str]) -> list[OpenAIModel]:
    started: dict[str, int] = {}
    for worker in workers:
        at = int(worker.started_at.timestamp())
        started[worker.model] = min(at, started.get(worker.model, at))
    return [OpenAIModel(id=name, created=started.get(name, 0)) for name in names]


def _served(shards: ShardsDep, settings: SettingsDep) -> list[OpenAIModel]:
    workers = live_workers_of(shards.all())  # as GET /models reads them: every Redis of the deployment
    return _openai_models(workers, [info.name for info in model_infos(workers, settings)])


@router.get("/v1/models", response_model=OpenAIModelList, responses=_RESPONSES)
def list_openai_models(shards: ShardsDep, settings: SettingsDep, caller: CallerDep) -> OpenAIModelList:
    """The models `GET /models` lists (the default, the models file's, any a live worker serves)."""
    return OpenAIModelList(data=_served(shards, settings))


@router.get("/v1/models/{model_id:path}", response_model=OpenAIModel, responses=_RESPONSES)
def get_openai_model(model_id: str, shards: ShardsDep, settings: SettingsDep, caller: CallerDep) -> OpenAIModel:
    """One model of `GET /v1/models` (404 naming `model` for one this deployment does not know)."""
    for model in _served(shards, settings):
        if model.id == model_id:
            return model
    raise ApiError(
        404,
        f"model: no model {model_id!r} here; GET /v1/models lists them",
        code="model_not_found",
        details=[{"field": "model", "message": "unknown model", "value": model_id}],
    )
