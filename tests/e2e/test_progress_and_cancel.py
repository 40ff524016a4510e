"""Live progress and cancel through real `imagegen api` and `imagegen worker` processes (tiny model)."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack, wait_until
from tests.e2e.sse import read_events

# About 0.12 s a step on a 2-core CPU: long enough to cancel mid-run, short enough not to hold the suite up.
LONG = {"prompt": "a long job", "width": 512, "height": 512, "steps": 150, "sampler": "euler"}
SHORT = {"prompt": "a short job", "width": 64, "height": 64, "steps": 4}


@pytest.fixture(scope="module")
def stack(cache_dir, tmp_path_factory) -> Iterator[Stack]:
    env = {**stack_env(cache_dir), "IMAGEGEN_SSE_PING_SECONDS": "0.5"}  # 15 s by default
    with started_stack(tmp_path_factory.mktemp("progress"), env) as running:
        yield running


def test_stream_of_a_20_step_job(stack: Stack) -> None:
    job = stack.submit(**{**SHORT, "steps": 20, "preview_every": 5, "num_images": 2})
    events = list(read_events(stack.client, job["id"]))
    types = [e.type for e in events]
    assert types[:2] == ["queued", "started"]
    assert types[-1] == "succeeded"
    assert sum(t in ("succeeded", "failed", "canceled") for t in types) == 1
    assert events[1].data["total"] == 20

    steps = [e.data["step"] for e in events if e.type == "step"]
    assert steps == sorted(set(steps)), "step events in order, no repeats"
    assert steps[-1] == 20
    assert all(e.data["total"] == 20 for e in events if e.type == "step")

    previews = [e for e in events if e.type == "preview"]
    assert [p.data["step"] for p in previews] == [5, 10, 15, 20]
    for preview in previews:
        image = Image.open(io.BytesIO(base64.b64decode(preview.data["data"])))
        assert image.format == "WEBP"
        assert image.size == (2 * 64 // 8, 64 // 8)  # two images side by side, at latent resolution

    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids)
    assert events[-1].data["images"] == stack.client.get(f"/jobs/{job['id']}").json()["images"]


def test_reconnect_with_last_event_id_resumes_without_gap_or_duplicate(stack: Stack) -> None:
    job = stack.submit(**{**LONG, "steps": 30, "width": 256, "height": 256})
    first = list(read_events(stack.client, job["id"], limit=3))  # connect, read a little, drop the connection
    rest = list(read_events(stack.client, job["id"], last_event_id=first[-1].id))
    whole = list(read_events(stack.client, job["id"]))
    assert [e.id for e in first + rest] == [e.id for e in whole]
    assert [e.type for e in first + rest] == [e.type for e in whole]
    assert whole[-1].type == "succeeded"


def test_bad_last_event_id_and_unknown_job(stack: Stack) -> None:
    job = stack.submit(**SHORT)
    response = stack.client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": "yesterday"})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("Last-Event-ID")
    assert stack.client.get("/jobs/0123456789abcdef0123456789abcdef/events").status_code == 404


def test_sse_headers_and_heartbeat(stack: Stack) -> None:
    job = stack.submit(**{**LONG, "steps": 16})  # about 2 s: several heartbeat intervals
    with stack.client.stream("GET", f"/jobs/{job['id']}/events") as response:
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["cache-control"] == "no-store"
        lines = list(response.iter_lines())
    assert any(line.startswith(":") for line in lines), "a comment heartbeat while the job runs"
    assert lines[-2].startswith("data:") or lines[-1].startswith("data:")
    assert "event: succeeded" in lines


def test_cancel_queued_and_running_jobs(stack: Stack) -> None:
    long_job = stack.submit(**LONG)
    wait_until(lambda: stack.client.get(f"/jobs/{long_job['id']}").json()["progress"]["step"] >= 1, 60, "a step")
    queued = [stack.submit(**SHORT, seed=s) for s in (1, 2)]
    assert [stack.client.get(f"/jobs/{j['id']}").json()["queue_position"] for j in queued] == [0, 1]

    # A queued job leaves the queue at once; the one behind it moves up.
    response = stack.client.delete(f"/jobs/{queued[0]['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert stack.client.get(f"/jobs/{queued[1]['id']}").json()["queue_position"] == 0

    # The running job stops at a step boundary, long before its 150 steps.
    response = stack.client.delete(f"/jobs/{long_job['id']}")
    asked = time.monotonic()
    assert response.status_code == 202
    canceled = stack.wait_job(long_job["id"], timeout=30)
    stopped_after = time.monotonic() - asked
    assert canceled["status"] == "canceled"
    assert canceled["progress"]["step"] < 150
    assert stopped_after < 10, f"cancel took {stopped_after:.1f}s"
    events = list(read_events(stack.client, long_job["id"]))
    assert events[-1].type == "canceled"
    assert stack.client.delete(f"/jobs/{long_job['id']}").status_code == 409

    # The worker goes on: the job behind succeeds; the canceled queued job never started.
    assert stack.wait_job(queued[1]["id"])["status"] == "succeeded"
    never = stack.client.get(f"/jobs/{queued[0]['id']}").json()
    assert never["status"] == "canceled"
    assert never["timings"]["started_at"] is None
    assert never["worker_id"] is None
    assert [e.type for e in read_events(stack.client, queued[0]["id"])] == ["queued", "canceled"]


def test_queue_position_counts_down(stack: Stack) -> None:
    ahead = [stack.submit(**{**LONG, "steps": 12, "width": 256, "height": 256}, seed=s) for s in range(3)]
    last = stack.submit(**SHORT)
    seen: list[int] = []
    etas: list[float | None] = []
    while True:
        job = stack.client.get(f"/jobs/{last['id']}").json()
        if job["status"] != "queued":
            break
        if not seen or seen[-1] != job["queue_position"]:
            seen.append(job["queue_position"])
            etas.append(job["eta_seconds"])
        time.sleep(0.02)
    assert seen[0] >= 2
    assert seen == sorted(seen, reverse=True), seen
    assert seen[-1] == 0
    # Once a job of this model has finished, its measured speed gives every later observation an ETA.
    assert all(eta is not None for eta in etas[1:]), etas
    assert stack.wait_job(last["id"])["status"] == "succeeded"
    assert all(stack.wait_job(j["id"])["status"] == "succeeded" for j in ahead)
