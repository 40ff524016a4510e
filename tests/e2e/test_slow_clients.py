"""Slow and hostile clients cannot hold the API: 200 connections dripping their headers or their body, one piece every
0.5 s, are cut off by the server at its header and body deadlines, and `/healthz` and `POST /generate` answer all the
while.

The real `imagegen api` process with short deadlines, no worker (submitted jobs stay queued).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.e2e.conftest import stack_env
from tests.e2e.processes import Process, free_port, wait_until

pytestmark = pytest.mark.slow

HEADER_DEADLINE = 2.0
BODY_DEADLINE = 3.0
DRIPPERS = 200  # half drip header lines, half drip a body
DRIP_EVERY = 0.5
HANG = 10.0  # generous: a bound that only catches a hang, not a timing goal
BODY = {"prompt": "a green square", "width": 64, "height": 64, "steps": 1}


@pytest.fixture
def api(cache_dir: Path, tmp_path: Path, redis_client: Redis) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **stack_env(cache_dir),
        "IMAGEGEN_HEADER_TIMEOUT_SECONDS": str(HEADER_DEADLINE),
        "IMAGEGEN_BODY_TIMEOUT_SECONDS": str(BODY_DEADLINE),
        "IMAGEGEN_SHUTDOWN_GRACE_SECONDS": "2",
    }
    process = Process(["api", "--port", str(port)], env, tmp_path / "api.log")
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, 60, "the API")
        yield f"http://127.0.0.1:{port}", port
    finally:
        process.stop()


@dataclass
class Dripped:
    """What one slow client saw: how long until the server closed its connection (None: it never did while the
    client dripped), and what the server answered before closing."""

    closed_after: float | None
    answer: bytes


async def _drip(port: int, head: bytes, pieces: list[bytes]) -> Dripped:
    """Send `head`, then one piece every DRIP_EVERY seconds; stop when the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer = b""
    try:
        writer.write(head)
        for piece in pieces:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), DRIP_EVERY)
            except TimeoutError:
                writer.write(piece)  # the server said nothing yet: one more piece
                continue
            answer += chunk
            if not chunk:  # closed by the server
                return Dripped(time.monotonic() - started, answer)
            answer += await asyncio.wait_for(reader.read(), HANG)  # the rest of the answer, up to the close
            return Dripped(time.monotonic() - started, answer)
        return Dripped(None, answer)
    except ConnectionError:
        return Dripped(time.monotonic() - started, answer)
    finally:
        writer.close()


async def _probe(http: httpx.AsyncClient) -> tuple[float, float]:
    """One `/healthz` and one `POST /generate`, each bounded by HANG; their times in seconds."""
    started = time.perf_counter()
    assert (await http.get("/healthz", timeout=HANG)).json() == {"status": "ok", "redis": None}
    health = time.perf_counter() - started
    started = time.perf_counter()
    accepted = await http.post("/generate", json=BODY, timeout=HANG)
    assert accepted.status_code == 202, accepted.text
    return health, time.perf_counter() - started


async def _attack(url: str, port: int) -> tuple[list[Dripped], list[Dripped], list[tuple[float, float]]]:
    # Each client would drip for 15 s (30 pieces): far longer than either deadline.
    header_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    header_pieces = [b"X-Slow-%d: 1\r\n" % n for n in range(30)]
    content = json.dumps(BODY).encode().ljust(64) * 4
    body_head = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    body_head += b"Content-Length: %d\r\n\r\n" % len(content)
    body_pieces = [content[n : n + 1] for n in range(30)]
    half = DRIPPERS // 2
    headers = [asyncio.ensure_future(_drip(port, header_head, header_pieces)) for _ in range(half)]
    bodies = [asyncio.ensure_future(_drip(port, body_head, body_pieces)) for _ in range(half)]
    async with httpx.AsyncClient(base_url=url) as http:
        await asyncio.sleep(DRIP_EVERY * 2)  # every slow client connected and dripping
        probes = []
        while not all(task.done() for task in headers + bodies):
            probes.append(await _probe(http))
            await asyncio.sleep(0.2)
        probes.append(await _probe(http))  # and after
    return await asyncio.gather(*headers), await asyncio.gather(*bodies), probes


def test_slow_clients_are_cut_off_and_the_api_keeps_answering(api: tuple[str, int]) -> None:
    url, port = api
    headers, bodies, probes = asyncio.run(_attack(url, port))

    # Every slow connection was closed by the server at its deadline (not at once, and well before the client's own
    # 15 s of dripping), with a 408 in the API's error shape naming the part that was too slow.
    for dripped, part, deadline in [(d, "headers", HEADER_DEADLINE) for d in headers] + [
        (d, "body", BODY_DEADLINE) for d in bodies
    ]:
        assert dripped.closed_after is not None, dripped
        assert deadline / 2 <= dripped.closed_after < deadline + HANG, dripped
        assert dripped.answer.startswith(b"HTTP/1.1 408 "), dripped.answer[:200]
        error = json.loads(dripped.answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_timeout"
        assert error["message"] == f"the request's {part} did not arrive within {deadline:g}s"

    # The API answered throughout (each probe bounded by HANG inside _probe): several rounds while under attack.
    assert len(probes) >= 3, probes
