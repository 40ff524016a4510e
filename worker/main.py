"""`imagegen worker`: load the model once, warm up, register with a heartbeat, then serve jobs in-process."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from core.catalog import with_served_model
from core.jobs import JobStore
from core.logs import configure_logging
from core.queueing import model_queue
from core.recovery import sweep
from core.schemas import WorkerInfo
from core.settings import Settings
from core.workers import publish_worker, remove_worker
from worker import metrics, tasks
from worker.engine import GenerationEngine
from worker.health import WorkerState, WorkerStatus, serve_health
from worker.pipeline.resident import ResidentPipeline

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Refreshes the worker's registry record every `interval` seconds until stopped."""

    def __init__(
        self, redis: Redis, info: WorkerInfo, status: WorkerStatus, interval: float, sweep: Callable[[], None]
    ) -> None:
        super().__init__(name="imagegen-heartbeat", daemon=True)
        self.redis = redis
        self.info = info
        self.status = status
        self.interval = interval
        self.sweep = sweep
        self.stopped = threading.Event()

    def beat(self) -> None:
        """Publish the record once, with the current state."""
        self.info.state = self.status.state.value.lower()
        self.info.current_jobs = sorted(self.status.current_jobs.copy())
        self.info.heartbeat_at = datetime.now(UTC)
        publish_worker(self.redis, self.info, self.interval)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
                self.sweep()  # every live worker also looks for jobs that lost theirs
            except Exception:  # a Redis hiccup must not kill the heartbeat; the next beat retries
                log.warning("heartbeat failed", exc_info=True)


class GenerationWorker(SimpleWorker):
    """RQ's in-process worker (no fork after CUDA starts) that remembers whether a signal asked it to stop."""

    signaled = False

    def request_stop(self, signum: int, frame: object) -> None:
        self.signaled = True
        super().request_stop(signum, frame)

    def subscribe(self) -> None:
        """RQ's command channel, read by a thread that wakes every second: RQ's own waits up to 60 s between reads,
        and its shutdown joins that thread without a limit, so a stopping worker could hang for a minute."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )


def serve_queue(redis: Redis, model_name: str, worker_id: str, settings: Settings) -> None:
    """Run RQ's in-process worker until a signal stops it; if Redis goes away, wait for it and go on."""
    delay = 1.0
    while True:
        rq_worker = GenerationWorker(
            [model_queue(redis, model_name).rq],
            connection=redis,
            name=f"{worker_id}.{uuid.uuid4().hex[:6]}",  # fresh: RQ refuses a name whose old record survived
            serializer=JSONSerializer,
        )
        rq_worker.work(logging_level=settings.log_level.upper())
        if rq_worker.signaled:  # SIGTERM/SIGINT: RQ finished the current job and stopped, as asked
            return
        log.warning("the queue loop ended without a stop request (Redis unreachable?); retrying in %.0fs", delay)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)
        with contextlib.suppress(RedisError):
            if redis.ping():
                delay = 1.0


def run_worker(settings: Settings) -> None:
    """Serve `settings.model` until SIGTERM/SIGINT (the current job is finished first)."""
    configure_logging(settings.log_level, "worker")
    settings = with_served_model(settings)  # a models-file name becomes its source, family and public name
    worker_id = settings.worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    model_name = settings.served_model_name()
    status = WorkerStatus()
    if settings.metrics_port:
        server = serve_health(status, settings.metrics_host, settings.metrics_port)
        log.info("metrics and health on port %d", server.server_address[1])
    redis = Redis.from_url(settings.redis_url)
    store = JobStore.from_settings(redis, settings)

    started = time.perf_counter()
    try:
        resident = ResidentPipeline.load(settings)
        engine = GenerationEngine(resident, store, settings, worker_id, status)
        engine.warm_up()
    except Exception as exc:
        status.state, status.detail = WorkerState.FAILED, f"{type(exc).__name__}: {exc}"
        log.exception("worker failed to load model %s", settings.model)
        raise SystemExit(1) from exc
    metrics.MODEL_LOAD_SECONDS.labels(model_name).set(time.perf_counter() - started)
    metrics.WORKER_BUSY.labels(model_name).set(0)
    metrics.register_gpu_memory(resident.device)
    tasks.install_engine(engine)

    now = datetime.now(UTC)
    info = WorkerInfo(
        id=worker_id,
        model=model_name,
        source=settings.model,
        samplers=resident.samplers(),
        loras=resident.loras(),
        device=resident.device,
        dtype=resident.dtype,
        state="ready",
        started_at=now,
        heartbeat_at=now,
    )
    status.state = WorkerState.READY
    heartbeat = Heartbeat(
        redis, info, status, settings.heartbeat_seconds, lambda: sweep(redis, store, settings.max_attempts)
    )
    heartbeat.beat()
    heartbeat.start()
    log.info("worker %s ready: model %s (%s) on %s", worker_id, model_name, resident.family, resident.device)
    try:
        serve_queue(redis, model_name, worker_id, settings)
    finally:
        engine.close()  # results still being stored are written before the worker leaves
        heartbeat.stopped.set()
        remove_worker(redis, worker_id)
        tasks.install_engine(None)
        log.info("worker %s stopped", worker_id)
