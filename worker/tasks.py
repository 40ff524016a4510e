"""The function RQ runs for each queued job (`core.queueing.GENERATE_TASK`), in the worker process itself."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from worker.engine import GenerationEngine

_engine: GenerationEngine | None = None


def install_engine(engine: GenerationEngine | None) -> None:
    """Make `engine` the one that queued jobs run on (set by the worker at start-up, cleared at exit)."""
    global _engine
    _engine = engine


def generate(*_older_payload: Any) -> None:
    """Run the current RQ job on the resident engine; the job's id is the imagegen job id and its request is read
    from the job record. (Jobs queued by an older API also carry the request as an argument: it is ignored.)"""
    job = get_current_job()
    if _engine is None or job is None:
        raise RuntimeError("worker.tasks.generate runs only inside an imagegen worker")
    _engine.run(job.id)
