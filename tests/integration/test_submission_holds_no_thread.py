"""A submission waits on Redis on the event loop (issue #20): with every thread of the request pool taken, POST
/generate still answers (it held a pool thread through its Redis round trips before)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import anyio.to_thread
from fastapi.testclient import TestClient
from redis import Redis

from core import keys
from core.queueing import model_queue
from core.settings import Settings
from service.app import create_app

REQUEST = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 3}
SUBMISSIONS = 6


def _one_pool_thread() -> None:
    """Shrink the event loop's thread pool (anyio's default limiter: what Starlette's `run_in_threadpool` uses) to one
    thread; run on the loop."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = 1


def test_submissions_complete_while_the_thread_pool_is_taken(settings: Settings, redis_client: Redis) -> None:
    taken, release = threading.Event(), threading.Event()

    def hold_the_pool() -> None:
        taken.set()
        release.wait(30)

    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        assert api.portal is not None  # the app's event loop, run by the client while in this block
        api.portal.call(_one_pool_thread)
        api.portal.start_task_soon(anyio.to_thread.run_sync, hold_the_pool)
        assert taken.wait(5), "the pool's one thread is taken"
        with ThreadPoolExecutor(SUBMISSIONS) as clients:
            try:
                answers = [
                    clients.submit(api.post, "/generate", json={**REQUEST, "seed": n}, headers=headers)
                    for n in range(SUBMISSIONS)
                    for headers in [{"Idempotency-Key": f"key-{n}"} if n % 2 else {}]
                ]
                done, _ = wait(answers, timeout=15)
                answered_while_taken = len(done)
            finally:
                release.set()  # lets a submission that needs the pool go on, so the test ends either way
        assert answered_while_taken == SUBMISSIONS, "submissions waited for the taken pool thread"
        ids = [answer.result().json()["id"] for answer in answers]
        assert [answer.result().status_code for answer in answers] == [202] * SUBMISSIONS
    assert sorted(model_queue(redis_client, "tiny").job_ids) == sorted(ids)


def test_a_queued_webhook_is_written_in_the_submission_transaction(settings: Settings, redis_client: Redis) -> None:
    """A job whose webhook wants `queued` gets it from a Lua script in the asyncio transaction, which loads the
    script first when Redis does not have it."""
    hooked = settings.model_copy(
        update={"webhook_secret": "whsec_" + "A" * 32, "webhook_allow_hosts": ["127.0.0.1"], "webhook_deliver": False}
    )
    redis_client.script_flush()
    body = {**REQUEST, "webhook_url": "http://127.0.0.1:9/hook", "webhook_events": ["queued"]}
    with TestClient(create_app(hooked), raise_server_exceptions=False) as api:
        accepted = api.post("/generate", json=body)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    [(_, delivery)] = redis_client.xrange(keys.webhook_deliveries_key())
    assert job_id.encode() in delivery.values() and b"queued" in delivery.values()
    assert [fields[b"type"] for _, fields in redis_client.xrange(keys.job_events_key(job_id))] == [b"queued"]
    assert model_queue(redis_client, "tiny").job_ids == [job_id]
