"""Work the API process does besides answering requests: the recovery sweep and webhook delivery."""

from __future__ import annotations

import logging
import threading

from redis import Redis
from redis.exceptions import RedisError

from core.jobs import JobStore
from core.object_store import ImageStore, ResultStoreUnavailableError, delete_due_objects
from core.recovery import sweep
from core.settings import Settings

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    """Runs `core.recovery.sweep` every `reaper_seconds`, so lost and overdue jobs are settled with no worker up; with
    a bucket for images, also deletes the objects whose job expired."""

    def __init__(self, redis: Redis, settings: Settings, images: ImageStore | None = None) -> None:
        super().__init__(name="imagegen-sweeper", daemon=True)
        self.redis = redis
        self.store = JobStore.from_settings(redis, settings)
        self.settings = settings
        self.images = images if images is not None and not images.inline else None  # Redis expires its own
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reaper_seconds):
            try:
                sweep(self.redis, self.store, self.settings.max_attempts, self.settings.lease_seconds)
                if self.images is not None:
                    delete_due_objects(self.redis, self.images)
            except ResultStoreUnavailableError as exc:  # they stay due: the next sweep deletes them
                log.warning("expired objects not deleted: %s", exc)
            except RedisError as exc:  # Redis away: try again next time, one line each
                log.warning("recovery sweep skipped: Redis unavailable (%s)", exc)
            except Exception:
                log.exception("recovery sweep failed")

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self.stopped.set()
        self.join(timeout=10)
