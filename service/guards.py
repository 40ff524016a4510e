"""ASGI middleware that answers in the API's error shape: a body over the size limit (413) and a body of a media type
an endpoint does not take (415), before FastAPI parses anything.

FastAPI's own `max_body_size` answers 413 in plain text from outside the app's exception handlers, so the one
error shape could not hold; this guard counts bytes itself instead.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import body_limit_message, error_response


class RequestGuard:
    """413 for a body over `max_body_bytes` (declared or counted); 415 for a body whose media type the path does not
    take (`media_types`: path -> accepted types; `application/json` also admits `+json` types)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, media_types: dict[str, tuple[str, ...]]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.media_types = media_types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body_bytes:
                response = error_response(413, "payload_too_large", body_limit_message(self.max_body_bytes))
                await response(scope, receive, send)
                return
            content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            accepted = self.media_types.get(scope["path"])
            if accepted and content_type and not _accepts(accepted, content_type):
                response = error_response(
                    415,
                    "unsupported_media_type",
                    f"content-type must be {' or '.join(accepted)}, got {content_type!r}",
                )
                await response(scope, receive, send)
                return
            receive = self._counting(receive)
        await self.app(scope, receive, send)

    def _counting(self, receive: Receive) -> Receive:
        """`receive` that raises a 413 HTTPException (answered by the app's handler) once the body is too long."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, body_limit_message(self.max_body_bytes))
            return message

        return counting_receive


def _accepts(accepted: tuple[str, ...], content_type: str) -> bool:
    if content_type in accepted:
        return True
    return "application/json" in accepted and content_type.startswith("application/") and content_type.endswith("+json")
