"""Work the API process does besides answering requests: the recovery sweep and webhook delivery."""

from __future__ import annotations

import logging
import threading

from redis import Redis
from redis.exceptions import RedisError

from core.jobs import JobStore
from core.recovery import sweep
from core.settings import Settings

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    """Runs `core.recovery.sweep` every `reaper_seconds`, so lost and overdue jobs are settled with no worker up."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        super().__init__(name="imagegen-sweeper", daemon=True)
        self.redis = redis
        self.store = JobStore.from_settings(redis, settings)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reaper_seconds):
            try:
                sweep(self.redis, self.store, self.settings.max_attempts, self.settings.lease_seconds)
            except RedisError as exc:  # Redis away: try again next time, one line each
                log.warning("recovery sweep skipped: Redis unavailable (%s)", exc)
            except Exception:
                log.exception("recovery sweep failed")

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self.stopped.set()
        self.join(timeout=10)
