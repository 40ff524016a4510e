"""The function an imagegen RQ job names (`core.queueing.GENERATE_TASK`).

RQ records a function per job; imagegen's worker never calls it: its queue loop (`worker.main.GenerationWorker`)
hands each dequeued job id to the engine, which claims the job and reads its request from the job record. A plain RQ
worker pointed at an imagegen queue would call it, and be refused.
"""

from __future__ import annotations

from typing import Any


def generate(*_payload: Any) -> None:
    """Refuse to run outside imagegen's worker (see the module docstring)."""
    raise RuntimeError("imagegen jobs run only in `imagegen worker` (worker/main.py), which claims them itself")
