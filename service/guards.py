"""ASGI middleware that refuses, in the route's error shape, what no endpoint should parse: a body over the size
limit (413), a body without a media type or of one the endpoint does not take (415), and a JSON body that gives a
key twice (422; JSON parsers keep the last value silently, multipart is refused the same way in its route).

FastAPI's own `max_body_size` answers 413 in plain text from outside the app's exception handlers, so the one
error shape could not hold; this guard counts bytes itself instead.
"""

from __future__ import annotations

import json
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, api_error_response, body_limit_message

_BODY_METHODS = ("POST", "PUT", "PATCH")
# Bodies up to this size are checked for duplicate keys on the event loop (well under a millisecond); larger ones in a
# worker thread, so that one upload of base64 images never stalls the other requests.
INLINE_PARSE_BYTES = 64 * 1024


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


def check_duplicate_keys(body: bytes) -> None:
    """422 naming the first key an object of the JSON `body` gives twice; a body that is not JSON is left to the
    route's parser, which says why."""
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKeyError as exc:
        raise ApiError(
            422,
            f"{exc.key}: given more than once",
            code="invalid_request",
            details=[{"field": exc.key, "message": "given more than once", "type": "duplicate_key"}],
        ) from exc
    except (ValueError, RecursionError):
        return


class RequestGuard:
    """413 for a body over `max_body_bytes` (declared or counted); for a POST to a path in `media_types` (path ->
    accepted types; `application/json` also admits `+json` types), 415 for a body without one of its types and 422
    for a JSON body with a duplicate key."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, media_types: dict[str, tuple[str, ...]]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.media_types = media_types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._checked(scope, receive)
        except ApiError as exc:
            await api_error_response(exc, scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive) -> Receive:
        """The `receive` the app gets, once what can be checked before the app runs is checked."""
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise self._too_large()
        # The guarded endpoints take POST; another method is the router's 405, not a 415.
        accepted = self.media_types.get(scope["path"]) if scope["method"] == "POST" else None
        if not accepted:
            return self._counting(receive)
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if not _accepts(accepted, content_type):
            got = repr(content_type) if content_type else "none"
            raise ApiError(
                415,
                f"content-type must be {' or '.join(accepted)}, got {got}",
                details=[
                    {"field": "content-type", "message": "not accepted", "value": content_type, "allowed": accepted}
                ],
            )
        if content_type == "multipart/form-data":
            return self._counting(receive)
        return await self._read_json(receive)

    def _too_large(self) -> ApiError:
        message = body_limit_message(self.max_body_bytes)
        return ApiError(413, message, details=[{"field": "body", "message": message, "limit": self.max_body_bytes}])

    def _counting(self, receive: Receive) -> Receive:
        """`receive` that raises a 413 `ApiError` (answered by the app's handler) once the body is too long."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()
            return message

        return counting_receive

    async def _read_json(self, receive: Receive) -> Receive:
        """Read the whole JSON body (within the limit) and check its keys; return a `receive` that replays it."""
        chunks: list[bytes] = []
        received = 0
        pending: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees that after what came
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": True}, message]
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                body = b"".join(chunks)
                if len(body) > INLINE_PARSE_BYTES:  # a large body (base64 images) is parsed off the event loop
                    await anyio.to_thread.run_sync(check_duplicate_keys, body)
                else:
                    check_duplicate_keys(body)
                pending = [{"type": "http.request", "body": body, "more_body": False}]
                break

        async def replaying_receive() -> Message:
            return pending.pop(0) if pending else await receive()

        return replaying_receive


def _accepts(accepted: tuple[str, ...], content_type: str) -> bool:
    if content_type in accepted:
        return True
    return "application/json" in accepted and content_type.startswith("application/") and content_type.endswith("+json")
