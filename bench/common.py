"""What the benchmarks share: free ports, waiting for a server, median timing with a device sync."""

from __future__ import annotations

import http.client
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json import dumps, loads
from typing import Any
from urllib.parse import urlsplit

import httpx


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout: float = 120) -> None:
    """Until `url` answers below 500; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of `fn` over `repeats` calls after one warm-up call, `sync` (device) before each reading."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_verdicts(verdicts: list[tuple[str, bool]]) -> dict[str, bool]:
    """Print each verdict as `verdict: PASS name` or `verdict: FAIL name`; returns them by name (for the JSON)."""
    for name, ok in verdicts:
        print(f"verdict: {'PASS' if ok else 'FAIL'} {name}")
    return dict(verdicts)


@dataclass
class LeanResponse:
    """What a benchmark reads of an answer."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.content[:200]!r}")


class LeanClient:
    """An HTTP/1.1 keep-alive client on the standard library's `http.client`, for load generators that share the
    machine with the service they measure: a request costs it a fraction of what one costs httpx, so the clients take
    less of the CPU the service needs (`bench/polling.py`). Same calls as the part of `httpx.Client` the benchmarks
    use (`get`, `post(json=...)`, a context manager); one connection, one thread."""

    def __init__(self, base_url: str, timeout: float = 600) -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        self.prefix = parts.path.rstrip("/")

    def request(self, method: str, path: str, body: bytes | None = None) -> LeanResponse:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if path.startswith("http://") or path.startswith("https://"):  # an absolute URL on the same server
            path = urlsplit(path)._replace(scheme="", netloc="").geturl()
        self.connection.request(method, self.prefix + path, body=body, headers=headers)
        answer = self.connection.getresponse()
        return LeanResponse(answer.status, answer.read())

    def get(self, path: str) -> LeanResponse:
        return self.request("GET", path)

    def lines(self, path: str) -> Iterator[str]:
        """The lines of a streamed answer (an event stream) as they come; stop reading to close the stream: the
        connection is dropped with it (the server sees the client go) and the next request opens a new one."""
        self.connection.request("GET", self.prefix + path)
        answer = self.connection.getresponse()
        try:
            while line := answer.readline():
                yield line.decode().rstrip("\r\n")
        finally:
            self.connection.close()

    def post(self, path: str, json: Any) -> LeanResponse:  # httpx's keyword
        return self.request("POST", path, body=dumps(json).encode())

    def __enter__(self) -> LeanClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.connection.close()
