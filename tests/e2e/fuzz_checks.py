"""A schemathesis check (loaded through `SCHEMATHESIS_HOOKS`): every 4xx/5xx body has the documented error shape of
its route, OpenAI's on `/v1/...`, AUTOMATIC1111's on `/sdapi/v1/...` and the API's own everywhere else."""

from __future__ import annotations

import json
from typing import Any

import schemathesis

OPENAI_KEYS = {"message", "type", "param", "code"}
OUR_KEYS = {"code", "message", "details"}
A1111_KEYS = {"error", "detail", "body", "errors"}


def shape_problem(path: str, body: Any) -> str | None:
    """What is wrong with an error body answered on `path`, or None when it has its route's shape."""
    if path.startswith("/sdapi/v1/"):
        if not isinstance(body, dict) or set(body) != A1111_KEYS:
            return f"A1111's error keys are {sorted(A1111_KEYS)}, got {body!r:.200}"
        if not (isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]):
            return "error and detail must be strings"
        errors = body["errors"]
        if not (isinstance(errors, list) and errors and all(isinstance(e, dict) and e.get("message") for e in errors)):
            return "errors must be a non-empty list of objects with a message"
        return None
    error = body.get("error") if isinstance(body, dict) and set(body) == {"error"} else None
    if not isinstance(error, dict):
        return 'not {"error": {...}}'
    if path.startswith("/v1/"):
        if set(error) != OPENAI_KEYS:
            return f"OpenAI's error keys are {sorted(OPENAI_KEYS)}, got {sorted(error)}"
        if not (isinstance(error["message"], str) and isinstance(error["type"], str)):
            return "message and type must be strings"
        if not all(error[key] is None or isinstance(error[key], str) for key in ("param", "code")):
            return "param and code must be strings or null"
        return None
    if set(error) != OUR_KEYS:
        return f"the error keys are {sorted(OUR_KEYS)}, got {sorted(error)}"
    if not (isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]):
        return "code and message must be strings"
    details = error["details"]
    if not (isinstance(details, list) and details and all(isinstance(d, dict) and d.get("message") for d in details)):
        return "details must be a non-empty list of objects with a message"
    return None


@schemathesis.check
def documented_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx answer is JSON in its route's error shape."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} answer is not JSON: {response.content[:200]!r}") from exc
    problem = shape_problem(case.path, body)
    if problem is not None:
        raise AssertionError(f"{response.status_code} on {case.path}: {problem}: {body}")
    return True
