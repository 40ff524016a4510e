"""Optional API keys: stored only as SHA-256 hashes, compared in constant time; per-key submission rate limit and
cap on queued + running jobs, both kept in Redis so every API replica agrees. Off unless keys are configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis

from core import keys
from core.schemas import Job
from core.settings import Settings
from service.deps import SettingsDep
from service.errors import ApiError

RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Caller:
    """Who is calling: `key_id` (a prefix of the key's hash, never the key) or None when auth is off."""

    key_id: str | None
    admin: bool

    def can_see(self, job: Job) -> bool:
        """A key sees only its own jobs; admins (and everyone, with auth off) see all."""
        return self.admin or self.key_id is None or job.owner == self.key_id


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is configured (`IMAGEGEN_API_KEY_HASHES`)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _matches(digest: str, configured: list[str]) -> bool:
    # Compare against every configured hash without stopping early, so timing says nothing about which matched.
    found = False
    for candidate in configured:
        found |= hmac.compare_digest(digest, candidate.strip().lower())
    return found


def authenticate(request: Request, settings: Settings) -> Caller:
    """The caller of `request`; 401 when keys are configured and none valid was presented."""
    if not settings.api_key_hashes and not settings.admin_key_hashes:
        return Caller(key_id=None, admin=True)
    key = _presented_key(request)
    if key is None:
        raise ApiError(401, "an API key is required (Authorization: Bearer <key> or X-API-Key)")
    digest = hash_key(key)
    admin = _matches(digest, settings.admin_key_hashes)
    if not admin and not _matches(digest, settings.api_key_hashes):
        raise ApiError(401, "the API key is not valid")
    return Caller(key_id=digest[:16], admin=admin)


async def get_caller(request: Request, settings: SettingsDep) -> Caller:
    """Dependency: the authenticated caller."""
    return authenticate(request, settings)


async def get_admin(caller: Annotated[Caller, Depends(get_caller)], settings: SettingsDep) -> Caller:
    """Dependency: an admin caller when admin keys are configured (anyone authenticated otherwise)."""
    if settings.admin_key_hashes and not caller.admin:
        raise ApiError(403, "this endpoint needs an admin key")
    return caller


async def check_submission_quota(caller: Caller, redis: Sequence[AsyncRedis], settings: Settings) -> None:
    """429 (with Retry-After) when the caller's key is over its submission rate or its active-job cap. `redis`: every
    Redis of the deployment, the default first (`RedisShards.all()`): the caps hold across shards, not per shard. The
    rate counter (INCR in the minute's window) lives on the default Redis; the active jobs are the sum of the key's
    set on every Redis (a job is in it on its own Redis, from its creation to its end: `core/jobs.py`), read at
    once: without shards, one round trip."""
    if caller.key_id is None or caller.admin:
        return
    now = time.time()
    window = int(now // RATE_WINDOW_SECONDS)
    rate_key = keys.api_key_rate_key(caller.key_id, window)
    pipes = [client.pipeline() for client in redis]
    pipes[0].incr(rate_key)
    pipes[0].expire(rate_key, RATE_WINDOW_SECONDS * 2)
    for pipe in pipes:
        pipe.scard(keys.api_key_active_jobs_key(caller.key_id))
    replies = await asyncio.gather(*(pipe.execute() for pipe in pipes))
    count = replies[0][0]
    active = sum(int(reply[-1]) for reply in replies)
    if count > settings.rate_limit_per_minute:
        retry_after = int((window + 1) * RATE_WINDOW_SECONDS - now) + 1
        raise ApiError(
            429,
            f"rate limit: at most {settings.rate_limit_per_minute} submissions a minute per API key",
            code="rate_limited",
            headers={"Retry-After": str(retry_after)},
        )
    if active >= settings.max_active_jobs_per_key:
        raise ApiError(
            429,
            f"this API key already has {active} queued or running jobs (limit {settings.max_active_jobs_per_key})",
            code="too_many_active_jobs",
            headers={"Retry-After": "5"},
        )


CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
