"""Every error answers in the one shape of its route, and never with a stack trace.

- The OpenAI-compatible routes (`/v1/...`) answer as OpenAI does: `{"error": {"message", "type", "param", "code"}}`.
- The AUTOMATIC1111-compatible routes (`/sdapi/v1/...`) answer in A1111's keys: `{"error", "detail", "body",
  "errors"}` (`error`: the stable code; `detail`: the message; `errors`: the list of problems, as `details` below).
- Every other route answers `{"error": {"code", "message", "details"}}`, where `details` is always a list of objects,
  one per problem, each with a `message` and, when one input is at fault, its `field` (a request field, or `path`,
  `method`, `content-type`, `body`, a header such as `Idempotency-Key`), plus what helps to fix it (`limit`,
  `allowed`, `value`, `retry_after`, ...).

`error_response` is the one place that picks the shape, by the request's path; the exception handlers, the request
guard (413/415, duplicate JSON keys) and anything else that answers an error go through it.
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.schemas import ErrorDetail, ErrorResponse, FieldError

log = logging.getLogger(__name__)

OPENAI_PATH_PREFIX = "/v1/"
A1111_PATH_PREFIX = "/sdapi/v1/"

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    499: "client_closed_request",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}
# OpenAI's error `type`: a class of error; our stable `code` goes in its `code`.
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
# Where a problem is not a request parameter, OpenAI's `param` stays null.
_NOT_PARAMS = frozenset({"body", "path", "method", "content-type"})
# A message that starts with what it is about: `size: ...`, `Idempotency-Key: ...`, `width*height: ...`.
_LEADING_FIELD = re.compile(r"^([A-Za-z][\w.*-]*): (.+)$", re.S)
# Where FastAPI says a parameter came from; the field is what follows.
_PARAM_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


class OpenAIErrorDetail(BaseModel):
    """The body of an error on the OpenAI-compatible routes, as OpenAI writes it."""

    message: str
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, rate_limit_error or server_error"
    )
    param: str | None = Field(default=None, description="The request parameter at fault, if one is.")
    code: str | None = Field(default=None, description="The API's stable error code (the same as on other routes).")


class OpenAIErrorResponse(BaseModel):
    """`{"error": {"message", "type", "param", "code"}}`: every 4xx and 5xx answer of the `/v1/...` routes."""

    error: OpenAIErrorDetail


class A1111ErrorResponse(BaseModel):
    """`{"error", "detail", "body", "errors"}`: every 4xx and 5xx answer of the AUTOMATIC1111-compatible `/sdapi/v1/...`
    routes, in the keys A1111's API answers its errors with (where A1111 puts an exception's class name in `error`,
    this API puts its stable error code, and `errors` lists each problem with its field instead of one string)."""

    error: str = Field(description="The API's stable error code (the same as on other routes).")
    detail: str = Field(description="What was wrong, naming the field and the limit.")
    body: str = Field(default="", description="Always empty (A1111 echoes a request body here).")
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="One object per problem: its `message` and the `field` at fault."
    )


def error_code_for_status(status: int) -> str:
    """The error code the API uses for an HTTP status."""
    return _CODES.get(status, "internal" if status >= 500 else "error")


def speaks_a1111(path: str) -> bool:
    """True for the AUTOMATIC1111-compatible routes, which answer errors in A1111's shape."""
    return path.startswith(A1111_PATH_PREFIX) or path == A1111_PATH_PREFIX.rstrip("/")


def speaks_openai(path: str) -> bool:
    """True for the OpenAI-compatible routes, which answer errors in OpenAI's shape."""
    return path.startswith(OPENAI_PATH_PREFIX) or path == OPENAI_PATH_PREFIX.rstrip("/")


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


def _detail_of(message: str) -> dict[str, Any]:
    """The one detail of an error that gave none: its field when the message starts with one."""
    match = _LEADING_FIELD.match(message)
    return {"field": match.group(1), "message": match.group(2)} if match else {"message": message}


def error_details(message: str, details: Any = None, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`details` as the list every error carries: as given when a list, else one object from the message (with a
    given dict's keys, and `retry_after` when the answer says when to retry)."""
    if isinstance(details, list):
        return [item if isinstance(item, dict) else {"message": str(item)} for item in details]
    item = _detail_of(message)
    if isinstance(details, dict):
        item |= details
    retry_after = {name.lower(): value for name, value in (headers or {}).items()}.get("retry-after")
    if retry_after is not None and retry_after.isdigit():
        item.setdefault("retry_after", int(retry_after))
    return [item]


def _openai_param(details: list[dict[str, Any]]) -> str | None:
    field = details[0].get("field") if details else None
    return field if isinstance(field, str) and field not in _NOT_PARAMS else None


def error_body(status: int, code: str, message: str, details: Any = None, *, path: str = "") -> dict[str, Any]:
    """The JSON body of an error: OpenAI's or AUTOMATIC1111's shape on their routes (by `path`), the API's own
    everywhere else."""
    items = error_details(message, details)
    if speaks_a1111(path):
        return A1111ErrorResponse(error=code, detail=message, errors=items).model_dump(mode="json")
    if speaks_openai(path):
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        openai = OpenAIErrorDetail(message=message, type=kind, param=_openai_param(items), code=code)
        return OpenAIErrorResponse(error=openai).model_dump(mode="json")
    return ErrorResponse(error=ErrorDetail(code=code, message=message, details=items)).model_dump(mode="json")


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    *,
    path: str = "",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error in the shape of the route at `path` (see `error_body`)."""
    body = error_body(status, code, message, error_details(message, details, headers), path=path)
    return JSONResponse(body, status_code=status, headers=headers)


def api_error_response(exc: ApiError, path: str) -> JSONResponse:
    """The answer to an `ApiError` raised while serving `path`."""
    return error_response(exc.status, exc.code, exc.message, exc.details, path=path, headers=exc.headers)


def _field(error: dict[str, Any]) -> str:
    """The field a pydantic error is about: its location less FastAPI's source (`body`, `query`, ...), and for a
    cross-field rule (a model validator) the field it names in its context."""
    if error.get("type") == "json_invalid":
        return "body"
    loc = [str(part) for part in error.get("loc", ())]
    if len(loc) > 1 and loc[0] in _PARAM_SOURCES:
        loc = loc[1:]
    elif loc == ["body"]:
        loc = []
    named = (error.get("ctx") or {}).get("field")
    if isinstance(named, str):
        loc.append(named)
    return ".".join(loc) or "body"


def _message(error: dict[str, Any]) -> str:
    return str(error.get("msg", "")).removeprefix("Value error, ")


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One detail per distinct problem of a pydantic validation: field, message, pydantic's type."""
    details: list[dict[str, Any]] = []
    for error in errors:
        detail = {"field": _field(error), "message": _message(error), "type": error.get("type")}
        if detail not in details:
            details.append(detail)
    return details


def _validation_response(exc: RequestValidationError, path: str) -> JSONResponse:
    errors = list(exc.errors())
    details = validation_details(errors)
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        message = f"body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}"
    else:
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "the request is not valid"
    return error_response(422, "invalid_request", message, details, path=path)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # 499 and other non-standard statuses
        return "error"


def _http_error_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """404/405 from the router, and any other HTTPException, with details that say what was wrong."""
    status, path, headers = exc.status_code, request.url.path, dict(exc.headers or {})
    phrase = _phrase(status)
    given = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    details: Any = None
    if status == 404 and given is None:
        given = f"no such path: {path}"
        details = [{"field": "path", "message": "no such path", "value": path}]
    elif status == 405 and given is None:
        allowed = [method.strip() for method in headers.get("Allow", headers.get("allow", "")).split(",") if method]
        given = f"method {request.method} is not allowed on {path}; allowed: {', '.join(allowed) or 'none'}"
        details = [{"field": "method", "message": "not allowed", "value": request.method, "allowed": allowed}]
    message = given or phrase
    return error_response(status, error_code_for_status(status), message, details, path=path, headers=headers)


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every 4xx/5xx answer in its route's error shape (in place of FastAPI's
    `HTTPValidationError`, which this API never sends), and 413/415/422 on every operation that takes a body."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorResponse, OpenAIErrorResponse, A1111ErrorResponse):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    ours = {f"#/components/schemas/{name}" for name in ("ErrorResponse", "HTTPValidationError")}
    for path, operations in schema.get("paths", {}).items():
        model = (
            OpenAIErrorResponse if speaks_openai(path) else A1111ErrorResponse if speaks_a1111(path) else ErrorResponse
        )
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                for status in ("413", "415", "422"):
                    responses.setdefault(status, {"description": HTTPStatus(int(status)).phrase})
            for status, response in responses.items():
                documented = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                if status[:1] in ("4", "5") and (documented is None or documented in ours):
                    response["content"] = content  # a route's own error body (e.g. /readyz's Health) stays
    for unused in ("HTTPValidationError", "ValidationError"):  # in this order: the first refers to the second
        if f'"#/components/schemas/{unused}"' not in json.dumps(schema):
            components.pop(unused, None)
    return schema


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise into its route's error shape, and document that shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc, request.url.path)

    @app.exception_handler(FieldError)
    async def field_error(request: Request, exc: FieldError) -> JSONResponse:
        details = [{"field": exc.field, "message": exc.message, "type": exc.type}]
        if exc.allowed is not None:
            details[0]["allowed"] = exc.allowed
        return error_response(422, "invalid_request", str(exc), details, path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _http_error_response(request, exc)

    @app.exception_handler(MaxConnectionsError)
    async def too_many_waiting(request: Request, exc: MaxConnectionsError) -> JSONResponse:
        # Not Redis down: this process holds as many Redis connections as it may (one per waiting request).
        limit = request.app.state.settings.max_waiting_requests
        log.warning("every Redis connection of this API process is in use (limit %d)", limit)
        message = (
            f"this API process is serving its limit of {limit} requests that wait on Redis "
            "(IMAGEGEN_MAX_WAITING_REQUESTS); retry shortly"
        )
        return error_response(503, "overloaded", message, path=request.url.path, headers={"Retry-After": "1"})

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("redis unavailable: %s", exc)
        message = "the job store (Redis) is unavailable; retry later"
        return error_response(503, "unavailable", message, path=request.url.path)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error", path=request.url.path)

    openapi = app.openapi

    def documented_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(openapi())
        return app.openapi_schema

    app.openapi = documented_openapi  # type: ignore[method-assign]
