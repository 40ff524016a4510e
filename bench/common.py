"""What the benchmarks share: free ports, waiting for a server, median timing with a device sync."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable

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
