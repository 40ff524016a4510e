"""Structured JSON logs for every imagegen process, with the current job's id bound to each line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

_job_id: ContextVar[str | None] = ContextVar("imagegen_job_id", default=None)


class _JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = _job_id.get()
        return True


@contextmanager
def bound_job(job_id: str) -> Iterator[None]:
    """Within this block every log line carries `job_id`."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def configure_logging(level: str, process: str) -> None:
    """One JSON object per line on stderr: time, level, logger, message, job_id, process, and any `extra` fields."""
    handler = logging.StreamHandler()
    handler.addFilter(_JobIdFilter())
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(job_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"process": process},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
