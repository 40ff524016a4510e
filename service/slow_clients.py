"""Deadlines for slow and hostile clients: a request's headers and its body must arrive within a bounded time.

uvicorn has no such deadline: its keep-alive timer is cancelled by any byte, so a client dripping one header line
(or one body byte) at a time holds its connection for as long as it likes, and a client that connects and sends
nothing holds it for ever. The deadlines are kept where the bytes arrive, in the HTTP protocol object, with one timer
per connection:

- headers: from the connection's start (or, on a kept-alive connection, from the next request's first byte) until its
  headers are complete;
- body: from the headers until the body's last byte, whether or not the app reads the body (a route that answers
  without reading it, such as the 413 guard, is covered too).

When a deadline passes, the client gets a 408 in the API's error shape (if no answer has started) and the connection
is closed; a route still reading the body sees the client gone (`http.disconnect`) and its own answer is dropped.
Idle kept-alive connections stay under uvicorn's own `timeout_keep_alive`.

`ClientGone` (ASGI middleware) turns Starlette's `ClientDisconnect`, raised in a route reading the body of a client
that left or was cut off, into one log line and a 499 in the metrics, instead of a stack trace and a counted 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_body

log = logging.getLogger(__name__)
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer


def timeout_response(message: str, path: str = "") -> bytes:
    """A complete HTTP/1.1 408 response in the error shape of the route `path` (OpenAI's on `/v1`; ours elsewhere, or
    when the headers never arrived), closing the connection."""
    body = error_body(408, "request_timeout", message, path=path)
    content = json.dumps(body).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(content)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + content


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header and a body deadline (seconds; set by `deadline_protocol`)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if cycle is None or not answering or not cycle.response_started:  # nothing sent for this request yet
            if answering:  # the route still waits for the body: it sees the client gone, its own answer is dropped
                cycle.disconnected = True
                cycle.message_event.set()
            path = cycle.scope.get("path", "") if cycle is not None else ""
            message = f"the request's {what} did not arrive within {seconds:g}s"
            self.transport.write(timeout_response(message, path))
        self.logger.info("closed a connection from %s: its %s took over %gs", self.client, what, seconds)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")  # also bounds a client that connects and sends nothing

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a kept-alive connection: its clock starts at its first byte
            self._arm(self.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class to pass as uvicorn's `http`, with these deadlines in seconds."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )


class ClientGone:
    """ASGI middleware: a route that finds its client gone while reading the body ends quietly (a 499 for the
    metrics; the server drops it, there is no one to send it to)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            log.info("%s %s: the client went away before its body was read", scope.get("method"), scope.get("path"))
            await send({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []})
            await send({"type": "http.response.body", "body": b""})
