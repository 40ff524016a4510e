"""`imagegen worker`: load the model once, warm up, register with a heartbeat, then serve jobs in-process.

The worker outlives Redis: through an outage of any length (or a Sentinel failover) it keeps its pipeline loaded,
reports not-ready on its health port, reconnects with backoff and serves again. It exits only on SIGTERM/SIGINT
(after the current job) or when its model cannot be loaded.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import WorkerStatus as RqWorkerState
from rq.worker_registration import clean_worker_registry

from core.catalog import with_served_model
from core.jobs import JobStore
from core.logs import configure_logging
from core.queueing import IdQueue
from core.recovery import sweep_if_due
from core.schemas import WorkerInfo
from core.settings import Settings
from core.sharding import redis_for_model
from core.workers import publish_worker, remove_worker
from worker import metrics
from worker.engine import GenerationEngine
from worker.health import WorkerState, WorkerStatus, serve_health
from worker.pipeline.resident import ResidentPipeline

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Refreshes the worker's registry record every `interval` seconds until stopped."""

    def __init__(
        self, redis: Redis, info: WorkerInfo, status: WorkerStatus, interval: float, sweep: Callable[[], object]
    ) -> None:
        super().__init__(name="imagegen-heartbeat", daemon=True)
        self.redis = redis
        self.info = info
        self.status = status
        self.interval = interval
        self.sweep = sweep
        self.rq_worker: SimpleWorker | None = None  # the queue loop's RQ worker: its record is kept alive too
        self.stopped = threading.Event()

    def beat(self) -> None:
        """Publish the record once, with the current state."""
        self.info.state = self.status.state.value.lower()
        self.info.current_jobs = sorted(self.status.current_jobs)
        self.info.heartbeat_at = datetime.now(UTC)
        publish_worker(self.redis, self.info, self.interval)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
                if self.rq_worker is not None:
                    self.rq_worker.heartbeat()  # RQ's record lives while a long job runs
                self.sweep()  # one live worker a beat (a lock) also looks for jobs that lost theirs
            except RedisError as exc:  # not ready until Redis answers again; the next beat retries
                if self.status.redis_error is None:
                    log.warning("Redis unavailable: not ready until it answers (%s)", exc)
                self.status.redis_error = f"{type(exc).__name__}: {exc}"
                continue
            except Exception:  # a bug in a sweep must not kill the heartbeat
                log.warning("heartbeat failed", exc_info=True)
            if self.status.redis_error is not None:
                log.info("Redis answers again: ready")
            self.status.redis_error = None


class GenerationWorker(SimpleWorker):
    """RQ's in-process worker (no fork after CUDA starts) whose jobs are run by the engine, which claims each one off
    RQ's intermediate list itself (`JobStore.claim`): RQ's own execution bookkeeping (started/finished registries,
    results) is not used, and RQ's cleanup of the intermediate list is left to imagegen's sweep, which gives an
    unclaimed job back to its queue instead of failing it. It remembers whether a signal asked it to stop."""

    signaled = False
    engine: GenerationEngine
    queue_class = IdQueue  # its queue carries bare job ids: no RQ job hash to fetch per job
    log_job_description = False  # a bare id has no description
    _suspension_checked = 0.0

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.set_state(RqWorkerState.BUSY)  # RQ's warm shutdown reads it: a signal now waits for the job to end
        try:
            with self.death_penalty_class(self.engine.store.job_timeout, JobTimeoutException, job_id=job.id):
                self.engine.run(job.id)
        finally:
            self.set_state(RqWorkerState.IDLE)

    # RQ writes its worker record (heartbeat, state) and checks `rq suspend` several times around every job: 20
    # commands a job. Here the record is written at most every RQ_RECORD_SECONDS (the heartbeat thread keeps it
    # alive while a job runs), with the state of the moment, and the suspension is looked up as often.

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """Busy and idle are kept in memory and published by the next heartbeat; other states are written at once."""
        self._state = state
        if state not in (RqWorkerState.BUSY, RqWorkerState.IDLE):
            super().set_state(state, pipeline)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's worker record kept alive, with the current state, if the last write is older than RQ_RECORD_SECONDS
        (always when a `pipeline` is given: the caller executes it)."""
        last = self.last_heartbeat
        if pipeline is None and last is not None and (rq_now() - last).total_seconds() < RQ_RECORD_SECONDS:
            return
        timeout = timeout or self.worker_ttl + 60
        self.last_heartbeat = rq_now()
        connection: Redis | Pipeline = pipeline if pipeline is not None else self.connection.pipeline(transaction=False)
        connection.hset(self.key, mapping={"last_heartbeat": utcformat(self.last_heartbeat), "state": self._state})
        connection.expire(self.key, timeout)
        if pipeline is None:
            assert isinstance(connection, Pipeline)
            connection.execute()

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's `rq suspend` check, at most every RQ_RECORD_SECONDS (a suspension takes effect within that)."""
        if time.monotonic() - self._suspension_checked < RQ_RECORD_SECONDS:
            return
        self._suspension_checked = time.monotonic()
        super().check_for_suspension(burst)

    def clean_registries(self) -> None:
        """RQ's maintenance, less its intermediate-list cleanup (which would fail an unclaimed job in RQ's terms and
        drop it from the list: imagegen's sweep gives it back instead)."""
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                clean_worker_registry(queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = rq_now()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Warm shutdown, as RQ's, without touching Redis in the signal handler (it may be away)."""
        self.signaled = True
        self._shutdown_requested_date = rq_now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        if self.get_state() == RqWorkerState.BUSY:
            self._stop_requested = True  # RQ's loop stops after the current job
            log.info("stopping after the current job (a second signal stops at once)")
        else:
            raise StopRequested()

    def subscribe(self) -> None:
        """RQ's command channel, read by a thread that wakes every second: RQ's own waits up to 60 s between reads,
        and its shutdown joins that thread without a limit, so a stopping worker could hang for a minute."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )


# RQ's worker record and suspension flag are written and read at most this often by the queue loop.
RQ_RECORD_SECONDS = 5.0
# RQ's worker record lives this long without a beat (the heartbeat thread beats it), and its queue loop blocks this
# long less 15 s on BLMOVE: short, so that a dead connection is noticed soon.
RQ_WORKER_TTL = 30
# Longest wait between reconnection tries while Redis is away (RQ's own default is 60 s).
MAX_RECONNECT_SECONDS = 5.0


def serve_queue(
    redis: Redis,
    engine: GenerationEngine,
    heartbeat: Heartbeat,
    worker_id: str,
    settings: Settings,
    worker_class: type[GenerationWorker] = GenerationWorker,
) -> None:
    """Run RQ's in-process worker (`worker_class`) until a signal stops it; if Redis goes away, wait for it (with
    backoff) and go on."""
    delay = 1.0
    while True:
        rq_worker: GenerationWorker | None = None
        try:
            rq_worker = worker_class(  # RQ names its connection here: Redis may be away already
                [engine.queue.rq],
                connection=redis,
                name=f"{worker_id}.{uuid.uuid4().hex[:6]}",  # fresh: RQ refuses a name whose old record survived
                serializer=JSONSerializer,
                worker_ttl=RQ_WORKER_TTL,
            )
            rq_worker.engine = engine
            rq_worker.max_connection_wait_time = MAX_RECONNECT_SECONDS
            heartbeat.rq_worker = rq_worker
            rq_worker.work(logging_level=settings.log_level.upper())
        except StopRequested:
            return
        except Exception as exc:  # Redis went away in RQ's bookkeeping: start a new loop once it is back
            heartbeat.status.redis_error = heartbeat.status.redis_error or f"{type(exc).__name__}: {exc}"
            log.warning("the queue loop stopped: %s: %s", type(exc).__name__, exc)
        heartbeat.rq_worker = None
        if rq_worker is not None and rq_worker.signaled:  # SIGTERM/SIGINT: the current job finished, as asked
            return
        log.warning("the queue loop ended without a stop request (Redis unreachable?); retrying in %.0fs", delay)
        try:
            time.sleep(delay)  # a signal now (RQ's handler) raises StopRequested
        except StopRequested:
            return
        delay = min(delay * 2, MAX_RECONNECT_SECONDS)
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
    # Its model's Redis (a shard, or the default one); a Sentinel-managed client follows a failover to the new primary.
    redis = redis_for_model(settings, model_name)
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
    serve_model(settings, engine, worker_id, status)


def serve_model(
    settings: Settings,
    engine: GenerationEngine,
    worker_id: str,
    status: WorkerStatus,
    worker_class: type[GenerationWorker] = GenerationWorker,
) -> None:
    """Register the loaded, warmed-up `engine` with a heartbeat and serve its model's queue until stopped; the
    fleet benchmark runs many of these as threads (`worker_class` without signal handlers)."""
    redis, store, resident = engine.store.redis, engine.store, engine.resident
    model_name = engine.model_name
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
        redis,
        info,
        status,
        settings.heartbeat_seconds,
        lambda: sweep_if_due(
            redis, store, settings.max_attempts, settings.lease_seconds, settings.heartbeat_seconds, worker_id
        ),
    )
    try:
        heartbeat.beat()
    except RedisError as exc:  # Redis away at start: the model stays loaded and the queue loop waits for it
        status.redis_error = f"{type(exc).__name__}: {exc}"
    heartbeat.start()
    log.info("worker %s ready: model %s (%s) on %s", worker_id, model_name, resident.family, resident.device)
    try:
        serve_queue(redis, engine, heartbeat, worker_id, settings, worker_class)
    finally:
        engine.close()  # results still being stored are written before the worker leaves
        heartbeat.stopped.set()
        with contextlib.suppress(RedisError):
            remove_worker(redis, worker_id, model_name)
        log.info("worker %s stopped", worker_id)
