"""`GET /jobs` on the real Redis: the caller's jobs newest first, filtered, a page at a time with a cursor that holds
under new submissions; one key never sees another's; admins see all; expired records drop out of the index."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core import job_index, keys
from core.job_index import SCAN_BUDGET, read_page
from core.jobs import JobStore
from core.schemas import GenerateRequest
from core.settings import Settings
from service.app import create_app
from service.auth import hash_key
from tests.conftest import TEST_REDIS_URL
from tests.redis_servers import RedisProcesses

BODY = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2}
K1, K2, ADMIN = ({"Authorization": f"Bearer {key}"} for key in ("key-one", "key-two", "key-admin"))


@pytest.fixture
def client(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    keyed = settings.model_copy(
        update={
            "api_key_hashes": [hash_key("key-one"), hash_key("key-two")],
            "admin_key_hashes": [hash_key("key-admin")],
        }
    )
    with TestClient(create_app(keyed)) as api:
        yield api


def _submit(client: TestClient, headers: dict[str, str], **fields: object) -> str:
    response = client.post("/generate", json={**BODY, **fields}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _ids(client: TestClient, headers: dict[str, str], query: str = "") -> list[str]:
    response = client.get(f"/jobs{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def _all_pages(client: TestClient, headers: dict[str, str], query: str, between: object = None) -> list[str]:
    """Every id over every page, following `next_cursor` (calling `between()` before each later page)."""
    seen: list[str] = []
    page = client.get(f"/jobs?{query}", headers=headers).json()
    while True:
        seen += [job["id"] for job in page["jobs"]]
        if page["next_cursor"] is None:
            return seen
        if callable(between):
            between()
        page = client.get(f"/jobs?{query}&cursor={page['next_cursor']}", headers=headers).json()


def test_a_key_lists_its_own_jobs_newest_first_and_admins_all(client: TestClient) -> None:
    mine = [_submit(client, K1) for _ in range(3)]
    theirs = [_submit(client, K2) for _ in range(2)]

    assert _ids(client, K1) == mine[::-1]
    assert _ids(client, K2) == theirs[::-1]
    assert _ids(client, ADMIN) == (mine + theirs)[::-1]
    # Another key's job stays unknown by id too.
    assert client.get(f"/jobs/{theirs[0]}", headers=K1).status_code == 404
    listed = client.get("/jobs", headers=K1).json()["jobs"][0]
    assert listed == client.get(f"/jobs/{mine[-1]}", headers=K1).json() | {"queue_position": None}
    assert "owner" not in listed
    assert client.get("/jobs").status_code == 401


def test_status_and_model_filters(client: TestClient, store: JobStore, redis_client: Redis) -> None:
    queued, done, failed = (_submit(client, K1) for _ in range(3))
    assert store.claim(done, "w", 2) and store.mark_succeeded(done, [b"png"])
    assert store.claim(failed, "w", 2) and store.mark_failed(failed, "w", "internal", "boom")
    other_model = "sd15"
    owner = hash_key("key-one")[:16]
    store.create("sd15-job", other_model, GenerateRequest(prompt="x", seed=1), owner=owner)

    assert _ids(client, K1, "?status=succeeded") == [done]
    assert _ids(client, K1, "?status=failed&status=succeeded") == [failed, done]
    assert _ids(client, K1, "?status=queued") == ["sd15-job", queued]
    assert _ids(client, K1, "?model=sd15") == ["sd15-job"]
    assert _ids(client, K1, "?model=tiny&status=queued") == [queued]
    error = client.get("/jobs?status=paused", headers=K1).json()["error"]
    assert error["details"][0]["field"] == "status.0"  # the first value given
    assert "succeeded" in error["message"]  # with the states allowed


def test_pages_cover_every_job_once_while_new_jobs_arrive(client: TestClient) -> None:
    before = [_submit(client, K1) for _ in range(11)]
    arrived: list[str] = []
    listed = _all_pages(client, K1, "limit=4", between=lambda: arrived.append(_submit(client, K1)))
    assert listed == before[::-1]  # each once, in order; the newer ones are above the first page's cursor
    assert len(arrived) == 2
    assert _ids(client, K1, "?limit=2") == arrived[::-1]  # and lead the next listing
    assert client.get("/jobs?limit=101", headers=K1).status_code == 422


def test_jobs_created_in_the_same_instant_are_paged_by_id(
    client: TestClient, redis_client: Redis, store: JobStore
) -> None:
    ids = [_submit(client, K1) for _ in range(5)]
    instant = time.time()
    # Two API replicas may create jobs in the same microsecond: give them all one creation time.
    redis_client.zadd(keys.owner_jobs_key(hash_key("key-one")[:16]), dict.fromkeys(ids, instant))
    assert _all_pages(client, K1, "limit=2") == sorted(ids, reverse=True)


def test_expired_records_are_skipped_and_leave_the_index(client: TestClient, redis_client: Redis) -> None:
    ids = [_submit(client, K1) for _ in range(4)]
    redis_client.delete(keys.job_key(ids[1]), keys.job_key(ids[2]))  # as their TTL would

    assert _ids(client, K1) == [ids[3], ids[0]]
    assert _all_pages(client, K1, "limit=1") == [ids[3], ids[0]]
    index = keys.owner_jobs_key(hash_key("key-one")[:16])
    assert redis_client.zscore(index, ids[1]) is None  # removed on the way
    assert redis_client.zscore(keys.all_jobs_key(), ids[1]) is not None  # until a listing meets it there
    assert _ids(client, ADMIN) == [ids[3], ids[0]]
    assert redis_client.zscore(keys.all_jobs_key(), ids[1]) is None


def test_submissions_trim_entries_older_than_any_record_lives(
    client: TestClient, redis_client: Redis, store: JobStore
) -> None:
    index = keys.owner_jobs_key(hash_key("key-one")[:16])
    job_index._trim_due.clear()  # as in a fresh process: its first submission to an index trims it
    redis_client.zadd(index, {"long-gone": time.time() - store.longest_life - 60})
    _submit(client, K1)
    assert redis_client.zscore(index, "long-gone") is None
    assert 0 < redis_client.ttl(index) <= store.longest_life + job_index.TRIM_EVERY_SECONDS
    # Within the minute the next submission only adds its entry (trimming is once a minute per index and process).
    redis_client.zadd(index, {"gone-later": time.time() - store.longest_life - 60})
    _submit(client, K1)
    assert redis_client.zscore(index, "gone-later") is not None
    job_index._trim_due.clear()  # a minute later
    _submit(client, K1)
    assert redis_client.zscore(index, "gone-later") is None


def test_a_cursor_it_did_not_make_is_422(client: TestClient) -> None:
    for cursor in ("not-base64!", "bm9wZQ", "bmFuIGpvYg"):  # garbage, "nope", "nan job"
        error = client.get(f"/jobs?cursor={cursor}", headers=K1).json()["error"]
        assert error["details"][0]["field"] == "cursor", cursor


def test_with_auth_off_everyone_sees_every_job(settings: Settings, redis_client: Redis) -> None:
    with TestClient(create_app(settings)) as api:
        ids = [_submit(api, {}) for _ in range(2)]
        assert _ids(api, {}) == ids[::-1]


def test_pages_merge_the_indexes_of_every_redis(
    redis_client: Redis, store: JobStore, redis_processes: RedisProcesses
) -> None:
    # Queues sharded by model: each Redis indexes the jobs it holds; a listing merges them, newest first.
    port = redis_processes.server()
    shard = Redis(port=port)
    shard_store = JobStore(shard, result_ttl=60, queue_ttl=60, job_timeout=60)
    created: list[tuple[str, str]] = []
    for n in range(9):
        on_shard = n % 3 == 0  # an uneven split: a page's share of each Redis differs
        model = "sd15" if on_shard else "tiny"
        (shard_store if on_shard else store).create(f"job{n}", model, GenerateRequest(prompt="x", seed=n))
        created.append((f"job{n}", model))
    newest_first = [job_id for job_id, _ in reversed(created)]

    async def every_page(limit: int, wanted: Callable[[dict[str, str]], bool]) -> list[list[str]]:
        clients = [AsyncRedis.from_url(TEST_REDIS_URL), AsyncRedis(port=port)]
        pages, after = [], None
        while True:
            records, after = await read_page(clients, keys.all_jobs_key(), wanted=wanted, limit=limit, after=after)
            pages.append([record["id"] for record in records])
            if after is None:
                break
        for client in clients:
            await client.aclose()
        return pages

    pages = asyncio.run(every_page(2, lambda record: True))
    assert [job_id for page in pages for job_id in page] == newest_first
    assert all(len(page) == 2 for page in pages[:-1])
    only_shard = asyncio.run(every_page(2, lambda record: record["model"] == "sd15"))
    assert [job_id for page in only_shard for job_id in page] == ["job6", "job3", "job0"]

    # More expired entries on one Redis than a page examines: that Redis stops short, so the page stops where it did
    # (here before any job: an empty page with a cursor) and the next pages carry on from there, losing nothing.
    newer = time.time() + 60
    shard.zadd(keys.all_jobs_key(), {f"gone{n:04}": newer + n / 1000 for n in range(SCAN_BUDGET + 5)})
    pages = asyncio.run(every_page(2, lambda record: True))
    assert pages[0] == []
    assert [job_id for page in pages for job_id in page] == newest_first
    assert shard.zcard(keys.all_jobs_key()) == 3  # the expired entries left the index on the way
    shard.close()
