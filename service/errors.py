"""Every error answers in one shape, `{"error": {"code", "message", "details"}}`, and never with a stack trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.schemas import ErrorDetail, ErrorResponse, LimitExceededError

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


def error_code_for_status(status: int) -> str:
    """The error code the API uses for an HTTP status."""
    return _CODES.get(status, "internal" if status >= 500 else "error")


class ApiError(Exception):
    """An error a handler raises to answer with a given status and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or error_code_for_status(status)
        self.message = message
        self.details = details
        self.headers = headers or {}


def body_limit_message(max_body_bytes: int) -> str:
    """The message of a 413: the body is over the configured limit."""
    return f"request body is over the limit of {max_body_bytes} bytes"


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    """A JSON error in the API's one shape."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def _field(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "body"
    parts = [str(p) for p in error.get("loc", ()) if p != "body"]
    return ".".join(parts) or "body"


def _message(error: dict[str, Any]) -> str:
    return str(error.get("msg", "")).removeprefix("Value error, ")


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    details = [{"field": _field(e), "message": _message(e), "type": e.get("type")} for e in errors]
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        message = f"body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}"
    else:
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return error_response(422, "invalid_request", message, details)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise into the one error shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(LimitExceededError)
    async def limit_error(request: Request, exc: LimitExceededError) -> JSONResponse:
        return error_response(422, "invalid_request", str(exc), [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        response = error_response(exc.status_code, error_code_for_status(exc.status_code), message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("redis unavailable: %s", exc)
        return error_response(503, "unavailable", "the job store (Redis) is unavailable; retry later")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error")
