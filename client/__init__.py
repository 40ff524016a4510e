"""The typed Python client of the imagegen API, the `imagegen generate` command and its progress view."""

from __future__ import annotations

from client.client import (
    AsyncImagegenClient,
    ImagegenClient,
    ImagegenError,
    JobFailedError,
    StreamEvent,
    StreamLostError,
)

__all__ = [
    "AsyncImagegenClient",
    "ImagegenClient",
    "ImagegenError",
    "JobFailedError",
    "StreamEvent",
    "StreamLostError",
]
