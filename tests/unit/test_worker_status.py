"""The jobs a worker's heartbeat names: one job may be admitted twice on a worker (a run whose result waits for Redis
and the next attempt of the same job, re-queued by a sweep meanwhile); the first settling must not drop the second
(the sweep would then call the worker lost during an attempt it is running: tests/e2e/test_faults.py found it)."""

from __future__ import annotations

from worker.health import WorkerStatus


def test_a_job_admitted_twice_stays_named_until_both_runs_settle() -> None:
    status = WorkerStatus()
    status.admitted("job")  # attempt 1: computed, its result held while Redis is away
    status.admitted("job")  # attempt 2 of the same job, on the same worker, after the sweep re-queued it
    status.admitted("other")
    status.settled("job")  # attempt 1's result is discarded (fenced): attempt 2 still runs here
    assert status.current_jobs == {"job", "other"}
    status.settled("job")
    assert status.current_jobs == {"other"}
    status.settled("other")
    status.settled("other")  # a settle without an admission changes nothing
    assert status.current_jobs == set()
