"""Probes that stay live when the thread pool is full and Redis hangs; `/docs` and `/redoc` behind a setting and a
Content-Security-Policy; refused webhook targets logged at submission."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.exceptions import RedisError

from core.settings import Settings
from service.app import create_app
from service.auth import hash_key
from tests.e2e.processes import free_port, wait_until

HANG = 5.0  # generous: catches a probe stuck behind the thread pool (the blocked requests wait 10 s), nothing finer
BODY = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2}


def _answers(url: str) -> bool:
    with Redis.from_url(url, socket_timeout=1) as redis:
        try:
            return bool(redis.ping())
        except RedisError:
            return False


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, which the test may freeze (SIGSTOP) without touching anyone else's."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: _answers(url), 10, "the test's redis-server")
        yield url, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


async def _probes_while_redis_hangs(
    settings: Settings, process: subprocess.Popen[bytes]
) -> dict[str, tuple[int, str, float]]:
    app = create_app(settings)
    seen: dict[str, tuple[int, str, float]] = {}

    async def timed(name: str, path: str) -> None:
        started = time.perf_counter()
        response = await http.get(path, timeout=30)
        seen[name] = (response.status_code, response.text, time.perf_counter() - started)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        await timed("ready before", "/readyz")
        process.send_signal(signal.SIGSTOP)  # Redis accepts connections but answers nothing
        # 60 sync requests block in Redis reads: more than the thread pool's 40 threads, all taken.
        blocked = [asyncio.ensure_future(http.get("/models", timeout=30)) for _ in range(60)]
        await asyncio.sleep(0.5)
        await timed("healthz", "/healthz")
        await timed("readyz", "/readyz")
        still_blocked = sum(not task.done() for task in blocked)
        process.send_signal(signal.SIGCONT)
        await asyncio.gather(*blocked, return_exceptions=True)
        await timed("ready after", "/readyz")
    await app.state.async_redis.aclose()
    await app.state.probe_redis.aclose()
    seen["blocked"] = (still_blocked, "", 0.0)
    return seen


def test_probes_answer_with_the_thread_pool_full_and_redis_hung(
    own_redis: tuple[str, subprocess.Popen[bytes]], settings: Settings
) -> None:
    url, process = own_redis
    configured = settings.model_copy(update={"redis_url": url, "ready_timeout_seconds": 0.3})
    seen = asyncio.run(_probes_while_redis_hangs(configured, process))
    assert seen["ready before"][:2] == (200, '{"status":"ok","redis":"ok"}')
    assert seen["blocked"][0] == 60  # while the probes ran, every /models request was stuck in Redis
    status, text, seconds = seen["healthz"]
    assert (status, text) == (200, '{"status":"ok","redis":null}')
    assert seconds < HANG
    status, text, seconds = seen["readyz"]
    assert (status, text) == (503, '{"status":"unavailable","redis":"no answer within 0.3s"}')
    assert seconds < HANG
    assert seen["ready after"][:2] == (200, '{"status":"ok","redis":"ok"}')


def test_readyz_names_the_redis_error(settings: Settings) -> None:
    down = TestClient(create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})))
    response = down.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "127.0.0.1:1" in response.json()["redis"]  # the connection error, not a bare "unavailable"


async def _blocking_reads(settings: Settings, readers: int) -> list[object]:
    app = create_app(settings)
    redis = app.state.async_redis
    try:
        # Each waiting request holds a connection in a blocking read, as the OpenAI route and event streams do.
        reads = [redis.xread({"helper-b:no-such-stream": "$"}, block=1000) for _ in range(readers)]
        return await asyncio.gather(*reads, return_exceptions=True)
    finally:
        await redis.aclose()
        await app.state.probe_redis.aclose()


def test_more_waiting_requests_than_redis_pys_default_pool(settings: Settings, redis_client: Redis) -> None:
    # redis-py's pools hold 100 connections unless told otherwise: the 101st waiting request would fail at once.
    results = asyncio.run(_blocking_reads(settings, 150))
    assert results == [[]] * 150, {type(r).__name__ for r in results}  # each read waited its second, none failed


# --- /docs and /redoc --------------------------------------------------------------------------------------------

_DIRECTIVES = re.compile(r"\s*([a-z-]+)\s+([^;]*)")


def _policy(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    return {match[1]: match[2].split() for part in policy.split(";") if (match := _DIRECTIVES.match(part))}


def _sha256(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def test_docs_pages_carry_a_policy_admitting_exactly_what_they_load(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    swagger = client.get("/docs")
    assert swagger.status_code == 200
    policy = _policy(swagger)
    assert policy["default-src"] == ["'none'"]
    scripts = re.findall(r'<script src="([^"]+)"', swagger.text)
    inline = re.findall(r"<script>(.*?)</script>", swagger.text, re.S)
    assert len(scripts) == 1 and len(inline) == 1
    # Exactly the page's one script file and its one inline script (by hash): no host-wide or unsafe source.
    assert sorted(policy["script-src"]) == sorted([*scripts, _sha256(inline[0])])
    stylesheets = re.findall(r'<link type="text/css" rel="stylesheet" href="([^"]+)"', swagger.text)
    assert sorted(policy["style-src"]) == sorted(["'unsafe-inline'", *stylesheets])
    assert policy["connect-src"] == ["'self'"]  # the OpenAPI document
    assert policy["frame-ancestors"] == ["'none'"]
    assert "url: '/openapi.json'" in swagger.text

    redoc = client.get("/redoc")
    assert redoc.status_code == 200
    policy = _policy(redoc)
    assert policy["script-src"] == re.findall(r'<script src="([^"]+)"', redoc.text)
    assert "<script>" not in redoc.text
    assert "fonts.googleapis.com" not in redoc.text  # no font host to admit
    assert policy["worker-src"] == ["blob:"]
    assert policy["connect-src"] == ["'self'"]
    for page in (swagger, redoc):
        icons = re.findall(r'<link rel="shortcut icon" href="([^"]+)"', page.text)
        assert set(icons) <= set(_policy(page)["img-src"])
    assert client.get("/openapi.json").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/docs" not in paths and "/redoc" not in paths


def test_docs_can_be_turned_off(settings: Settings) -> None:
    client = TestClient(create_app(settings.model_copy(update={"api_docs": False})))
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/openapi.json").status_code == 200  # the schema stays, for clients and tools


# --- refused webhook targets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "reason"),
    [
        ("http://10.0.0.7/hook", "10.0.0.7", "10.0.0.7 is a private address"),
        ("http://169.254.169.254/latest", "169.254.169.254", "169.254.169.254 is a link-local address"),
        ("http://127.1:8080/x", "127.1", "127.1 (127.0.0.1) is a loopback address"),
    ],
)
def test_refused_webhook_targets_are_logged_at_submission(
    settings: Settings, redis_client: Redis, caplog: pytest.LogCaptureFixture, url: str, host: str, reason: str
) -> None:
    key = "alice-secret-key"
    configured = settings.model_copy(update={"webhook_secret": "whsec_" + "A" * 32, "api_key_hashes": [hash_key(key)]})
    client = TestClient(create_app(configured), headers={"Authorization": f"Bearer {key}"})
    with caplog.at_level(logging.WARNING, logger="service.submission"):
        response = client.post("/generate", json={**BODY, "webhook_url": url})
    assert response.status_code == 422
    [record] = [r for r in caplog.records if r.name == "service.submission"]
    assert record.levelno == logging.WARNING
    key_id = hash_key(key)[:16]
    assert record.getMessage() == f"webhook target refused at submission: key {key_id}, host {host}: {reason}"
    assert (record.key_id, record.webhook_host, record.reason) == (key_id, host, reason)  # type: ignore[attr-defined]
    assert key not in record.getMessage()  # the key id, never the key


def test_an_accepted_webhook_target_logs_no_refusal(
    settings: Settings, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    configured = settings.model_copy(
        update={"webhook_secret": "whsec_" + "A" * 32, "webhook_allow_hosts": ["127.0.0.1"]}
    )
    client = TestClient(create_app(configured))
    with caplog.at_level(logging.WARNING, logger="service.submission"):
        response = client.post("/generate", json={**BODY, "webhook_url": "http://127.0.0.1:9/hook"})
    assert response.status_code == 202
    assert not [r for r in caplog.records if r.name == "service.submission"]
