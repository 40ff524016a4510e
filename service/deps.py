"""Shared dependencies as `Annotated` aliases, so handlers read like their signatures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis import Redis

from core.jobs import JobStore
from core.settings import Settings


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_redis(request: Request) -> Redis:
    """The app's Redis client (a thread-safe connection pool)."""
    redis: Redis = request.app.state.redis
    return redis


def get_job_store(
    redis: Annotated[Redis, Depends(get_redis)], settings: Annotated[Settings, Depends(get_app_settings)]
) -> JobStore:
    """The job store over the app's Redis."""
    return JobStore.from_settings(redis, settings)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
