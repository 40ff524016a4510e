"""API keys, idempotency and backpressure on the real Redis."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from core.jobs import JobStore
from core.settings import Settings
from core.speed import record_speed
from core.workers import publish_worker
from service.app import create_app
from service.auth import hash_key
from tests.integration.test_api import _worker

BODY = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2}
ALICE, BOB, ADMIN = "alice-secret-key", "bob-secret-key", "admin-secret-key"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(settings: Settings, redis_client: Redis) -> TestClient:
    configured = settings.model_copy(
        update={
            "api_key_hashes": [hash_key(ALICE), hash_key(BOB)],
            "admin_key_hashes": [hash_key(ADMIN)],
            "rate_limit_per_minute": 5,
            "max_active_jobs_per_key": 3,
        }
    )
    return TestClient(create_app(configured), raise_server_exceptions=False)


def test_no_key_and_wrong_key_are_401(keyed: TestClient) -> None:
    assert keyed.post("/generate", json=BODY).status_code == 401
    response = keyed.post("/generate", json=BODY, headers=_bearer("guess"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert keyed.get("/models").status_code == 401
    assert keyed.get("/healthz").status_code == 200  # probes need no key


def test_a_key_sees_only_its_own_jobs(keyed: TestClient) -> None:
    job_id = keyed.post("/generate", json=BODY, headers=_bearer(ALICE)).json()["id"]
    assert keyed.get(f"/jobs/{job_id}", headers=_bearer(ALICE)).status_code == 200
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/images/0", f"/jobs/{job_id}/events"):
        response = keyed.get(path, headers={"X-API-Key": BOB})
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert keyed.delete(f"/jobs/{job_id}", headers=_bearer(BOB)).status_code == 404
    assert keyed.get(f"/jobs/{job_id}", headers=_bearer(ADMIN)).status_code == 200
    assert "owner" not in keyed.get(f"/jobs/{job_id}", headers=_bearer(ALICE)).json()


def test_metrics_need_the_admin_key(keyed: TestClient) -> None:
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers=_bearer(ALICE)).status_code == 403
    assert keyed.get("/metrics", headers=_bearer(ADMIN)).status_code == 200


def test_active_job_cap_then_rate_limit(keyed: TestClient) -> None:
    codes = [keyed.post("/generate", json=BODY, headers=_bearer(ALICE)).status_code for _ in range(3)]
    assert codes == [202, 202, 202]
    capped = keyed.post("/generate", json=BODY, headers=_bearer(ALICE))
    assert capped.status_code == 429
    assert capped.json()["error"]["code"] == "too_many_active_jobs"
    assert int(capped.headers["retry-after"]) >= 1
    # Bob has his own cap; canceling frees Alice's slots.
    assert keyed.post("/generate", json=BODY, headers=_bearer(BOB)).status_code == 202
    for job_id in [j.decode() for j in keyed.app.state.redis.lrange("rq:queue:imagegen.tiny", 0, 2)]:
        keyed.delete(f"/jobs/{job_id}", headers=_bearer(ADMIN))
    assert keyed.post("/generate", json=BODY, headers=_bearer(ALICE)).status_code == 202  # 5th this minute
    limited = keyed.post("/generate", json=BODY, headers=_bearer(ALICE))  # 6th: over 5 a minute
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 61


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> TestClient:
    return TestClient(create_app(settings.model_copy(update={"max_queue_depth": 3})), raise_server_exceptions=False)


def test_idempotency_key_replays_the_same_job(client: TestClient, store: JobStore) -> None:
    first = client.post("/generate", json=BODY, headers={"Idempotency-Key": "order-17"})
    again = client.post("/generate", json=BODY, headers={"Idempotency-Key": "order-17"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["seed"] == first.json()["seed"]
    other = client.post("/generate", json={**BODY, "steps": 3}, headers={"Idempotency-Key": "order-17"})
    assert other.status_code == 409
    assert "different request body" in other.json()["error"]["message"]
    fresh = client.post("/generate", json=BODY, headers={"Idempotency-Key": "order-18"})
    assert fresh.json()["id"] != first.json()["id"]


def test_full_queue_is_429_with_retry_after(client: TestClient) -> None:
    assert [client.post("/generate", json=BODY).status_code for _ in range(3)] == [202, 202, 202]
    response = client.post("/generate", json=BODY)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "queue_full"
    assert int(response.headers["retry-after"]) >= 1


def test_max_wait_refuses_a_job_predicted_to_start_too_late(client: TestClient, redis_client: Redis) -> None:
    publish_worker(redis_client, _worker("w1", "tiny", []), heartbeat_seconds=5)
    record_speed(redis_client, "tiny", seconds=10.0, work=1.0)  # slow: 10 s a unit of work
    client.post("/generate", json={**BODY, "width": 512, "height": 512, "steps": 10})  # 10 units ahead: ~100 s
    refused = client.post("/generate", json={**BODY, "max_wait_seconds": 30})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "wait_too_long"
    assert error["details"][0]["field"] == "max_wait_seconds"
    assert error["details"][0]["predicted_start_seconds"] == pytest.approx(100.0)
    assert "retry-after" in refused.headers
    assert client.post("/generate", json={**BODY, "max_wait_seconds": 300}).status_code == 202


def test_webhook_urls_are_checked_at_submission(client: TestClient, settings: Settings) -> None:
    response = client.post("/generate", json={**BODY, "webhook_url": "https://example.com/hook"})
    assert response.status_code == 422
    assert "not enabled" in response.json()["error"]["message"]
    enabled = TestClient(create_app(settings.model_copy(update={"webhook_secret": "whsec_" + "A" * 32})))
    for url in ("http://10.0.0.7/hook", "http://169.254.169.254/latest", "http://127.0.0.1:9/x", "http://[::1]/x"):
        response = enabled.post("/generate", json={**BODY, "webhook_url": url})
        assert response.status_code == 422, url
        assert response.json()["error"]["message"].startswith("webhook_url"), response.json()


def test_every_redis_connection_taken_is_503_overloaded_not_redis_down(settings: Settings) -> None:
    """A process may hold `max_waiting_requests` Redis connections (one per waiting request); past them a request is
    answered 503 `overloaded` with Retry-After, naming the limit, and served again once one frees."""
    limited = settings.model_copy(update={"max_waiting_requests": 2})
    with TestClient(create_app(limited), raise_server_exceptions=False) as api:
        assert api.portal is not None
        pool = api.app.state.async_redis.connection_pool  # type: ignore[attr-defined]
        held = [api.portal.call(pool.get_connection) for _ in range(2)]  # two requests waiting on Redis, say
        refused = api.post("/generate", json=BODY)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert "IMAGEGEN_MAX_WAITING_REQUESTS" in refused.json()["error"]["message"]
        assert refused.headers["Retry-After"] == "1"
        for connection in held:
            api.portal.call(pool.release, connection)
        assert api.post("/generate", json=BODY).status_code == 202
