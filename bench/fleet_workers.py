"""One process of the fleet benchmark's workers: `--workers` worker runtimes as threads, each with its own engine,
RQ worker, heartbeat and Redis connection pool, over the sleeping stand-in pipeline (`bench/sleep_pipeline.py`).

Run by `bench/fleet.py`, which stops it with SIGTERM (the process ends at once: what the runs left unfinished is
what a crashed worker leaves, and the benchmark drains before it stops the fleet).

    python -m bench.fleet_workers --redis-url redis://127.0.0.1:6390/0 --workers 50 --seconds-per-step 0.05
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

from rq.timeouts import BaseDeathPenalty

from bench.sleep_pipeline import SleepPipeline
from core.jobs import JobStore
from core.redis_connection import redis_client
from core.settings import Settings
from worker.engine import GenerationEngine
from worker.health import WorkerStatus
from worker.main import GenerationWorker, serve_model

# Threads start this far apart, so that 100 RQ workers do not register in the same instant.
START_SPACING_SECONDS = 0.01


class NoDeathPenalty(BaseDeathPenalty):
    """No job timeout: RQ's default one is SIGALRM, which only the main thread may use (a stand-in job never hangs)."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


class ThreadedWorker(GenerationWorker):
    """The worker's RQ loop in a thread: no signal handlers (only the main thread may install them) and no SIGALRM
    timeout. Everything else is the real worker's."""

    death_penalty_class = NoDeathPenalty

    def _install_signal_handlers(self) -> None:
        return None


def run_one(settings: Settings, worker_id: str, seconds_per_step: float) -> None:
    """One worker runtime over its own Redis connection pool, until the process ends."""
    redis = redis_client(settings)
    store = JobStore.from_settings(redis, settings)
    status = WorkerStatus()
    engine = GenerationEngine(SleepPipeline(seconds_per_step), store, settings, worker_id, status)
    serve_model(settings, engine, worker_id, status, ThreadedWorker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--model", default="fleet")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of this process's first worker (its ids)")
    parser.add_argument("--seconds-per-step", type=float, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Other settings (heartbeat, batching, TTLs) come from the IMAGEGEN_* environment the benchmark passes.
    settings = Settings(redis_url=args.redis_url, model=args.model, metrics_port=0, log_level="WARNING")
    for index in range(args.first, args.first + args.workers):
        thread = threading.Thread(
            target=run_one,
            args=(settings, f"fleet-{index:04d}", args.seconds_per_step),
            name=f"fleet-{index:04d}",
            daemon=True,
        )
        thread.start()
        time.sleep(START_SPACING_SECONDS)
    print(f"started {args.workers} workers in process {os.getpid()}", flush=True)
    threading.Event().wait()  # until SIGTERM


if __name__ == "__main__":
    main()
