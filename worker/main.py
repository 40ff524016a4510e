"""`imagegen worker`: load the model once, warm up, register with a heartbeat, then serve jobs in-process."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from datetime import UTC, datetime

from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from core.jobs import JobStore
from core.queueing import model_queue
from core.schemas import WorkerInfo
from core.settings import Settings
from core.workers import publish_worker, remove_worker
from worker import tasks
from worker.engine import GenerationEngine
from worker.loading import load_model
from worker.samplers import supported_samplers

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Refreshes the worker's registry record every `interval` seconds until stopped."""

    def __init__(self, redis: Redis, info: WorkerInfo, engine: GenerationEngine, interval: float) -> None:
        super().__init__(name="imagegen-heartbeat", daemon=True)
        self.redis = redis
        self.info = info
        self.engine = engine
        self.interval = interval
        self.stopped = threading.Event()

    def beat(self) -> None:
        """Publish the record once, with the current state."""
        self.info.state = "busy" if self.engine.busy else "ready"
        self.info.heartbeat_at = datetime.now(UTC)
        publish_worker(self.redis, self.info, self.interval)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a Redis hiccup must not kill the heartbeat; the next beat retries
                log.warning("heartbeat failed", exc_info=True)


def run_worker(settings: Settings) -> None:
    """Serve `settings.model` until SIGTERM/SIGINT (the current job is finished first)."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker_id = settings.worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    model_name = settings.served_model_name()
    redis = Redis.from_url(settings.redis_url)
    store = JobStore.from_settings(redis, settings)

    loaded = load_model(settings)
    engine = GenerationEngine(loaded, store, settings, worker_id)
    engine.warm_up()
    tasks.install_engine(engine)

    now = datetime.now(UTC)
    info = WorkerInfo(
        id=worker_id,
        model=model_name,
        source=settings.model,
        samplers=supported_samplers(engine.base_scheduler_config),
        device=str(loaded.device),
        dtype=str(loaded.dtype).removeprefix("torch."),
        state="ready",
        started_at=now,
        heartbeat_at=now,
    )
    heartbeat = Heartbeat(redis, info, engine, settings.heartbeat_seconds)
    heartbeat.beat()
    heartbeat.start()
    log.info("worker %s ready: model %s on %s", worker_id, model_name, loaded.device)

    rq_worker = SimpleWorker(
        [model_queue(redis, model_name)],
        connection=redis,
        name=worker_id,
        serializer=JSONSerializer,
    )
    try:
        rq_worker.work(logging_level=settings.log_level.upper())
    finally:
        heartbeat.stopped.set()
        remove_worker(redis, worker_id)
        tasks.install_engine(None)
        log.info("worker %s stopped", worker_id)
