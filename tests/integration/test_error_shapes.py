"""One error shape per route, everywhere: `{"error": {"code", "message", "details"}}` with `details` a list that names
the field at fault, and OpenAI's `{"error": {"message", "type", "param", "code"}}` on `/v1/...` (validation, 401,
404, 405, 413, 415, 429, 503, 504 alike); router-level answers, the request guard and the CLI included."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from client.client import ImagegenError
from core.queueing import model_queue
from core.settings import Settings
from service.app import create_app
from service.auth import hash_key
from service.errors import error_body
from tests.conftest import api_server
from tests.redis_servers import free_port

BODY = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2}
OPENAI = "/v1/images/generations"
OPENAI_KEYS = {"message", "type", "param", "code"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> TestClient:
    return TestClient(create_app(settings.model_copy(update={"max_body_bytes": 4096})), raise_server_exceptions=False)


def _ours(response: Any, status: int) -> dict[str, Any]:
    """The error of a native route's answer, checked to be exactly the documented shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["details"], list) and error["details"], body
    assert all(isinstance(item, dict) and item.get("message") for item in error["details"]), body
    return error


def _openai(response: Any, status: int) -> dict[str, Any]:
    """The error of an OpenAI route's answer, checked to be exactly OpenAI's shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == OPENAI_KEYS, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and isinstance(error["code"], str), body
    return error


def _png(size: tuple[int, int] = (64, 64), mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# --- the OpenAI routes answer in OpenAI's shape ---


def test_openai_bad_size_names_size_without_pydantic_text(client: TestClient) -> None:
    error = _openai(client.post(OPENAI, json={"prompt": "x", "size": "100x100"}), 422)
    assert error == {
        "message": "size: must be a multiple of 8, got 100",
        "type": "invalid_request_error",
        "param": "size",
        "code": "invalid_request",
    }
    for size, text in (("abc", "expected WxH"), ("32x64", "greater than or equal to 64")):
        error = _openai(client.post(OPENAI, json={"prompt": "x", "size": size}), 422)
        assert (error["param"], text in error["message"]) == ("size", True), error
        assert "pydantic" not in error["message"] and "validation error" not in error["message"]


def test_openai_validation_names_the_openai_parameter(client: TestClient) -> None:
    assert _openai(client.post(OPENAI, json={"n": 1}), 422)["param"] == "prompt"
    assert _openai(client.post(OPENAI, json={"prompt": "x", "n": 9}), 422)["param"] == "n"
    over = client.post(OPENAI, json={"prompt": "x", "size": "2048x2048"})  # over IMAGEGEN_MAX_PIXELS
    assert _openai(over, 422)["param"] == "size"
    duplicate = client.post(
        OPENAI, content=b'{"prompt": "x", "prompt": "y"}', headers={"content-type": "application/json"}
    )
    error = _openai(duplicate, 422)
    assert (error["param"], error["message"]) == ("prompt", "prompt: given more than once")


def test_openai_router_guard_and_server_errors_in_openai_shape(client: TestClient) -> None:
    assert _openai(client.get("/v1/models-that-do-not-exist"), 404)["type"] == "invalid_request_error"
    assert _openai(client.get(OPENAI), 405)["code"] == "method_not_allowed"
    assert _openai(client.post(OPENAI, json={"prompt": "x" * 5000}), 413)["code"] == "payload_too_large"
    assert _openai(client.post(OPENAI, content=b"{}"), 415)["code"] == "unsupported_media_type"
    wrong_type = client.post(OPENAI, content=b"prompt=x", headers={"content-type": "text/plain"})
    assert "text/plain" in _openai(wrong_type, 415)["message"]
    # 499 (the client went away) is never read by anyone; its body has the route's shape all the same.
    assert set(error_body(499, "client_closed_request", "gone", path=OPENAI)["error"]) == OPENAI_KEYS


def test_openai_401_429_503_504(settings: Settings, redis_client: Redis) -> None:
    keyed = settings.model_copy(update={"api_key_hashes": [hash_key("k")], "rate_limit_per_minute": 1})
    api = TestClient(create_app(keyed), raise_server_exceptions=False)
    error = _openai(api.post(OPENAI, json={"prompt": "x"}), 401)
    assert (error["type"], error["code"]) == ("authentication_error", "unauthorized")
    headers = {"Authorization": "Bearer k"}
    assert api.post("/generate", json=BODY, headers=headers).status_code == 202  # the minute's one submission
    limited = api.post(OPENAI, json={"prompt": "x", "size": "64x64"}, headers=headers)
    assert _openai(limited, 429)["type"] == "rate_limit_error"
    assert limited.headers["retry-after"].isdigit()

    no_worker = TestClient(create_app(settings.model_copy(update={"queue_without_workers": False})))
    error = _openai(no_worker.post(OPENAI, json={"prompt": "x", "size": "64x64"}), 503)
    assert (error["type"], error["code"]) == ("server_error", "no_worker")

    waiting = settings.model_copy(update={"openai_timeout_seconds": 0.2})  # no worker runs the job
    with TestClient(create_app(waiting), raise_server_exceptions=False) as api:
        error = _openai(api.post(OPENAI, json={"prompt": "x", "size": "64x64"}), 504)
        assert (error["type"], error["code"]) == ("server_error", "timeout")

    redis_down = TestClient(create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})))
    assert _openai(redis_down.post(OPENAI, json={"prompt": "x"}), 503)["code"] == "unavailable"
    assert _ours(redis_down.post("/generate", json=BODY), 503)["code"] == "unavailable"


# --- everything else answers in ours, with details naming what was wrong ---


def test_unknown_path_and_wrong_method_say_what_and_which(client: TestClient) -> None:
    error = _ours(client.get("/no/such/thing"), 404)
    assert error["details"] == [{"field": "path", "message": "no such path", "value": "/no/such/thing"}]
    error = _ours(client.put("/generate", json=BODY), 405)
    assert error["details"] == [{"field": "method", "message": "not allowed", "value": "PUT", "allowed": ["POST"]}]
    assert error["message"] == "method PUT is not allowed on /generate; allowed: POST"
    assert _ours(client.get("/jobs/nope"), 404)["code"] == "not_found"


def test_body_guards_answer_in_our_shape(client: TestClient, redis_client: Redis) -> None:
    error = _ours(client.post("/generate", json={**BODY, "prompt": "x" * 5000}), 413)
    assert error["details"] == [{"field": "body", "message": error["message"], "limit": 4096}]
    no_type = _ours(client.post("/generate", content=b'{"prompt": "x"}'), 415)
    assert no_type["message"] == "content-type must be application/json or multipart/form-data, got none"
    assert no_type["details"][0]["field"] == "content-type"
    duplicate = client.post(
        "/generate", content=b'{"prompt": "x", "steps": 2, "steps": 3}', headers={"content-type": "application/json"}
    )
    error = _ours(duplicate, 422)
    assert error["details"] == [{"field": "steps", "message": "given more than once", "type": "duplicate_key"}]
    nested = b'{"prompt": "x", "loras": [{"name": "a", "name": "b"}]}'
    error = _ours(client.post("/generate", content=nested, headers={"content-type": "application/json"}), 422)
    assert error["details"][0]["field"] == "name"
    assert model_queue(redis_client, "tiny").count == 0


@pytest.mark.parametrize(
    ("patch", "field", "text"),
    [
        ({"image": "abc"}, "mask_image", "inpainting needs both image and mask_image"),
        ({"mask_image": "abc"}, "image", "inpainting needs both image and mask_image"),
        ({"init_image": "abc", "image": "abc", "mask_image": "abc"}, "init_image", "not both"),
        ({"init_image": "abc", "steps": 4, "strength": 0.1}, "strength", "runs no step"),
        ({"loras": [{"name": "a"}, {"name": "a"}]}, "loras", "each adapter may appear once"),
    ],
)
def test_cross_field_errors_name_the_field(client: TestClient, patch: dict, field: str, text: str) -> None:
    error = _ours(client.post("/generate", json={**BODY, **patch}), 422)
    assert [detail["field"] for detail in error["details"]] == [field]
    assert error["message"].startswith(f"{field}: ") and text in error["message"]


def test_strength_without_an_input_image_is_422_naming_it(client: TestClient, redis_client: Redis) -> None:
    parts = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % pair
        for pair in ((b"prompt", b"x"), (b"strength", b"0.5"))
    )
    multipart = client.post(
        "/generate", content=parts + b"--b--\r\n", headers={"content-type": "multipart/form-data; boundary=b"}
    )
    for response in (client.post("/generate", json={**BODY, "strength": 0.5}), multipart):
        error = _ours(response, 422)
        assert error["message"].startswith("strength: applies only with an input image"), error
        assert [(d["field"], d["type"]) for d in error["details"]] == [("strength", "strength_without_image")]
    assert model_queue(redis_client, "tiny").count == 0
    with_image = client.post("/generate", json={**BODY, "init_image": _png(), "strength": 0.5})
    assert with_image.status_code == 202, with_image.text
    # A job's recorded request holds every field, strength's default too: sent again as it is, it is accepted.
    recorded = client.get(f"/jobs/{with_image.json()['id']}").json()["request"]
    replay = {**recorded, "init_image": None}
    assert replay["strength"] == 0.5 and client.post("/generate", json=replay).status_code == 422
    assert client.post("/generate", json={**replay, "strength": 0.8}).status_code == 202


def test_the_pixel_limit_keeps_our_message_past_pillows_own_guard(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # 400 M pixels: past Pillow's decompression guard
    body = {**BODY, "init_image": base64.b64encode(buffer.getvalue()).decode()}
    big = TestClient(create_app(Settings(redis_url="redis://127.0.0.1:1/0", max_pixels=512 * 512)))
    error = _ours(big.post("/generate", json=body), 422)
    assert error["message"] == "init_image: over the limit of 262144 pixels (it has 400000000)"
    assert "decompression" not in error["message"].lower() and "DOS" not in error["message"]
    assert error["details"][0] == {"field": "init_image", "message": error["message"][12:], "limit": 262144}


def test_the_openapi_document_says_each_routes_error_shape(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45" and not (path == "/readyz" and status == "503"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    wanted = (
                        "OpenAIErrorResponse"
                        if path.startswith("/v1/")
                        else "A1111ErrorResponse"
                        if path.startswith("/sdapi/v1/")
                        else "ErrorResponse"
                    )
                    assert ref.endswith("/" + wanted), (method, path, status, ref)
    assert {"413", "415", "422"} <= set(document["paths"][OPENAI]["post"]["responses"])


# --- the CLI: one `error:` line and a non-zero exit, never a traceback ---


@pytest.fixture
def api_url(settings: Settings, redis_client: Redis) -> Iterator[str]:
    """A real API server on a free loopback port (in a thread of this process)."""
    with api_server(settings) as url:
        yield url


def test_cli_errors_are_one_line_and_a_nonzero_exit(api_url: str, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cases = {
        "missing file": (["x", "--init-image", str(tmp_path / "missing.png"), "--url", closed], "--init-image: "),
        "unreachable": (["x", "--url", closed], "unavailable: cannot reach the API"),
        "http error": (["x", *("--width", "2048", "--height", "2048"), "--url", api_url], "width*height: "),
        "strength": (["x", "--strength", "0.5", "--url", api_url], "invalid_request: strength: "),
        "bad option": (["x", "--steps", "many"], "argument --steps: invalid int value"),
        "bad url": (["x", "--url", "http://[::1"], "invalid_request: --url"),
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "launcher.main", "generate", *argv, "-o", str(tmp_path / "out.png")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (argv, _) in cases.items()
    }
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode != 0, (name, stderr)
        assert "Traceback" not in stderr + stdout, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
        assert cases[name][1] in lines[0], (name, lines[0])
    assert not (tmp_path / "out.png").exists()


def test_the_fuzzers_shape_check_accepts_both_shapes_and_nothing_else(client: TestClient) -> None:
    checks = pytest.importorskip("tests.e2e.fuzz_checks", reason="schemathesis not installed (dev extra)")
    assert checks.shape_problem("/generate", client.post("/generate", json={}).json()) is None
    assert checks.shape_problem(OPENAI, client.post(OPENAI, json={}).json()) is None
    assert checks.shape_problem(OPENAI, client.post("/generate", json={}).json()) is not None
    assert checks.shape_problem("/generate", client.post(OPENAI, json={}).json()) is not None
    fastapi_default = {"detail": [{"loc": ["body"], "msg": "Field required", "type": "missing"}]}
    assert checks.shape_problem("/jobs/{job_id}", fastapi_default) is not None
    null_details = {"error": {"code": "not_found", "message": "Not Found", "details": None}}
    assert checks.shape_problem("/jobs/{job_id}", null_details) is not None


def test_the_python_client_reads_both_shapes(client: TestClient) -> None:
    for path in ("/generate", OPENAI):
        answer = client.post(path, json={"prompt": "x", "colour": "red"} if path == "/generate" else {"n": 1})
        error = ImagegenError.from_response(httpx.Response(answer.status_code, content=answer.content))
        assert (error.status, error.code) == (422, "invalid_request"), path
        field = "colour" if path == "/generate" else "prompt"
        assert error.details[0]["field"] == field and error.message.startswith(f"{field}: "), path
