"""A minimal Server-Sent Events reader for tests (the service side uses sse-starlette)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    id: str
    type: str
    data: dict[str, Any]


def read_events(
    client: httpx.Client, job_id: str, last_event_id: str | None = None, limit: int | None = None, timeout: float = 120
) -> Iterator[Event]:
    """Events of a job's stream, from the start or after `last_event_id`; stops after `limit` events if given."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with client.stream("GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        count = 0
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # comment (heartbeat)
            if line == "":
                if "data" in fields:
                    yield Event(fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"]))
                    count += 1
                    if limit is not None and count >= limit:
                        return
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
