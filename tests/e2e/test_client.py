"""The Python client, sync and async, against real `imagegen api` and `imagegen worker` processes with API keys on."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from client import AsyncImagegenClient, ImagegenClient, ImagegenError, JobFailedError
from core.events import PreviewEvent, QueuedEvent, StartedEvent, StepEvent, SucceededEvent
from core.schemas import GenerateRequest, JobStatus, Sampler
from launcher.main import main
from service.auth import hash_key
from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack

KEY = "sk-client-test"
SMALL = GenerateRequest(prompt="a red circle", width=64, height=64, steps=6, seed=21)
LONG = GenerateRequest(prompt="a long job", width=512, height=512, steps=150, sampler=Sampler.EULER)


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**stack_env(cache_dir), "IMAGEGEN_API_KEY_HASHES": json.dumps([hash_key(KEY)])}
    # The worker's pixel limit is below the API's: a 520x512 job is accepted, then fails in the worker.
    with started_stack(
        tmp_path_factory.mktemp("client"), env, {"IMAGEGEN_MAX_PIXELS": str(512 * 512)}, api_key=KEY
    ) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[ImagegenClient]:
    with ImagegenClient(stack.url, api_key=KEY) as client:
        yield client


def test_submit_stream_wait_images(client: ImagegenClient) -> None:
    job = client.submit(SMALL.model_copy(update={"num_images": 2, "preview_every": 3}))
    assert job.status is JobStatus.QUEUED and job.seed == 21
    events = list(client.stream(job.id))
    assert isinstance(events[0].event, QueuedEvent) and isinstance(events[1].event, StartedEvent)
    assert isinstance(events[-1].event, SucceededEvent)
    steps = [e.event for e in events if isinstance(e.event, StepEvent)]
    assert steps[-1].step == steps[-1].total == 6
    assert [e.event.step for e in events if isinstance(e.event, PreviewEvent)] == [3, 6]
    done = client.wait(job.id, timeout=60)
    assert done.status is JobStatus.SUCCEEDED and done.images == events[-1].event.images
    images = [Image.open(io.BytesIO(data)) for data in client.images(done)]
    assert [(image.format, image.size) for image in images] == [("PNG", (64, 64))] * 2


def test_stream_resumes_after_a_given_event_id(client: ImagegenClient) -> None:
    job = client.submit(SMALL)
    whole = list(client.stream(job.id))
    rest = list(client.stream(job.id, last_event_id=whole[1].id))
    assert [e.id for e in rest] == [e.id for e in whole[2:]]
    assert rest[-1].type == "succeeded"


def test_cancel_a_running_job(client: ImagegenClient) -> None:
    job = client.submit(LONG)
    for event in client.stream(job.id):
        if isinstance(event.event, StepEvent) and event.event.step >= 2:
            break
    requested = client.cancel(job.id)
    assert requested.cancel_requested
    ended = client.wait(job.id, timeout=60)
    assert ended.status is JobStatus.CANCELED
    with pytest.raises(JobFailedError) as no_images:
        client.images(ended)
    assert no_images.value.code == "canceled"
    with pytest.raises(ImagegenError) as again:
        client.cancel(job.id)
    assert (again.value.status, again.value.code) == (409, "conflict")


def test_errors_carry_the_apis_code_message_and_details(stack: Stack, client: ImagegenClient) -> None:
    with pytest.raises(ImagegenError) as too_big:
        client.submit(SMALL.model_copy(update={"width": 2048, "height": 2048}))
    assert (too_big.value.status, too_big.value.code) == (422, "invalid_request")
    assert "1048576" in too_big.value.message
    assert too_big.value.details[0]["field"] == "width*height"
    with pytest.raises(ImagegenError) as missing:
        client.get("0123456789abcdef0123456789abcdef")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with ImagegenClient(stack.url) as anonymous, pytest.raises(ImagegenError) as refused:
        anonymous.submit(SMALL)
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


def test_generate_returns_images_or_raises_job_failed(client: ImagegenClient) -> None:
    job, images = client.generate(SMALL, timeout=60)
    assert job.status is JobStatus.SUCCEEDED and len(images) == 1
    with pytest.raises(JobFailedError) as failed:
        client.generate(SMALL.model_copy(update={"width": 520, "height": 512}), timeout=60)
    assert failed.value.code == "invalid_request"
    assert str(512 * 512) in failed.value.message
    assert failed.value.job.status is JobStatus.FAILED
    with pytest.raises(ImagegenError) as unknown_model:
        client.generate(SMALL.model_copy(update={"model": "no-such-model"}), timeout=60)
    assert (unknown_model.value.status, unknown_model.value.code) == (422, "invalid_request")


def test_submit_with_wait_lists_jobs_and_the_jobs_command(
    stack: Stack, client: ImagegenClient, capsys: pytest.CaptureFixture[str]
) -> None:
    done = client.submit(SMALL.model_copy(update={"seed": 5}), wait=25)  # `Prefer: wait`: answered once it ended
    assert done.status is JobStatus.SUCCEEDED and len(done.images) == 1
    # Inline images straight from the worker's result, as the raw answer carries them.
    answer = httpx.post(
        f"{stack.url}/generate?response_format=b64_json",
        json=SMALL.model_dump(mode="json", exclude_unset=True),
        headers={"Authorization": f"Bearer {KEY}", "Prefer": "wait=25"},
        timeout=30,
    )
    assert (answer.status_code, answer.headers["preference-applied"]) == (200, "wait=25")
    (inline,) = answer.json()["images_b64"]
    assert Image.open(io.BytesIO(base64.b64decode(inline))).size == (64, 64)

    newest = client.list_jobs(limit=1)
    assert [job.id for job in newest.jobs] == [answer.json()["id"]] and newest.next_cursor
    older = client.list_jobs(limit=100, cursor=newest.next_cursor)
    assert older.jobs[0].id == done.id and answer.json()["id"] not in {job.id for job in older.jobs}
    assert all(job.status is JobStatus.SUCCEEDED for job in client.list_jobs(status=JobStatus.SUCCEEDED).jobs)

    assert main(["jobs", "--url", stack.url, "--api-key", KEY, "--status", "succeeded", "--limit", "1"]) == 0
    printed = capsys.readouterr()
    assert [line.split()[:2] for line in printed.out.splitlines()] == [[answer.json()["id"], "succeeded"]]
    assert printed.err.startswith("more: imagegen jobs --status succeeded --limit 1 --cursor ")
    next_page = shlex.split(printed.err.removeprefix("more: imagegen "))
    assert main([*next_page, "--url", stack.url, "--api-key", KEY]) == 0  # the command it printed, as printed
    assert capsys.readouterr().out.split()[:2] == [done.id, "succeeded"]
    assert main(["jobs", "--url", stack.url, "--limit", "2"]) == 1  # no key: the API's 401, said in one line
    assert capsys.readouterr().err.startswith("error: unauthorized: ")


def test_async_client_flow(stack: Stack) -> None:
    async def flow() -> None:
        async with AsyncImagegenClient(stack.url, api_key=KEY) as client:
            assert [model["name"] for model in await client.models()] == ["tiny"]
            job = await client.submit(SMALL.model_copy(update={"seed": 99}))
            types = [event.type async for event in client.stream(job.id)]
            assert types[:2] == ["queued", "started"] and types[-1] == "succeeded"
            done = await client.wait(job.id, timeout=60)
            assert done.seed == 99
            (png,) = await client.images(done)
            assert Image.open(io.BytesIO(png)).size == (64, 64)
            assert (await client.list_jobs(limit=1)).jobs[0].id == job.id

            long = await client.submit(LONG)
            canceled = await client.cancel(long.id)  # still queued or just started: either way it ends canceled
            assert canceled.status is JobStatus.CANCELED or canceled.cancel_requested
            assert (await client.wait(long.id, timeout=60)).status is JobStatus.CANCELED
            async for event in client.stream(long.id):
                last = event
            assert last.type == "canceled"

    asyncio.run(flow())
