"""Liveness under load: `/healthz` and `POST /generate` latency while hundreds of clients wait on synchronous
generation and others poll their jobs.

Real processes: a redis-server of its own, `imagegen api`, one `imagegen worker` on the `tiny` model (niced: on a
deployment it has a GPU node of its own, here it must not take the API's CPU). A load process (niced too) keeps
`--waiters` clients waiting on `POST /v1/images/generations` (each asks again when answered) and `--pollers` clients
polling `GET /jobs/{id}` every `--poll-interval` seconds (each submits a new job when its job ends). Meanwhile a probe
in this process times `GET /healthz` (on a new connection each time from a bare socket, as a kubelet probes, and on a
kept-alive one) and `POST /generate` (kept alive, as an app submits). Baselines, in the same run: the same probe
against the same API idle, and, at the same moments as the loaded probe, against a bare FastAPI `/healthz` in a
uvicorn of its own with no load (its tail is the machine's: CPU contention and scheduling).

    python bench/liveness.py [--waiters 200] [--pollers 50] [--seconds 30] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, print_verdicts, wait_for

GENERATE = {"prompt": "liveness probe", "width": 64, "height": 64, "steps": 1, "sampler": "euler"}
OPENAI = {"prompt": "a red circle", "size": "64x64"}
TERMINAL = ("succeeded", "failed", "canceled", "expired")
HEALTHZ_P99_MS, GENERATE_P99_MS = 50.0, 200.0
SERIES = {
    "healthz_ms": "GET /healthz, new connection",
    "healthz_kept_alive_ms": "GET /healthz, kept alive",
    "generate_ms": "POST /generate, kept alive",
    "bare_healthz_ms": "bare uvicorn /healthz, new conn.",
}
# The baseline: the same probe, at the same moments, against a bare app in a uvicorn of its own (no load on it). Its
# tail is the machine's (CPU contention, scheduling), which the API's tail includes too.
BARE_APP = """
from fastapi import FastAPI
app = FastAPI()
@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------------------------- the load process


async def _waiter(http: httpx.AsyncClient, stop: asyncio.Event, waiting: Synchronized, counts: dict[str, int]) -> None:
    while not stop.is_set():
        with waiting.get_lock():
            waiting.value += 1
        try:
            response = await http.post("/v1/images/generations", json=OPENAI)
            counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1
        except httpx.HTTPError as exc:
            counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
            await asyncio.sleep(0.1)
        finally:
            with waiting.get_lock():
                waiting.value -= 1


async def _poller(http: httpx.AsyncClient, stop: asyncio.Event, interval: float, counts: dict[str, int]) -> None:
    job_id = None
    while not stop.is_set():
        try:
            if job_id is None:
                job_id = (await http.post("/generate", json=GENERATE)).json()["id"]
            job = (await http.get(f"/jobs/{job_id}")).json()
            counts["polls"] = counts.get("polls", 0) + 1
            if job["status"] in TERMINAL:
                job_id = None
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            counts[f"poll {type(exc).__name__}"] = counts.get(f"poll {type(exc).__name__}", 0) + 1
        await asyncio.sleep(interval)


async def _load(url: str, waiters: int, pollers: int, interval: float, waiting: Synchronized, done: Event) -> dict:
    counts: dict[str, int] = {}
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=waiters + pollers + 10, max_keepalive_connections=waiters + pollers + 10)
    timeout = httpx.Timeout(10, read=None)  # a waiter waits as long as the server lets it
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        tasks = [asyncio.ensure_future(_waiter(http, stop, waiting, counts)) for _ in range(waiters)]
        tasks += [asyncio.ensure_future(_poller(http, stop, interval, counts)) for _ in range(pollers)]
        while not done.is_set():
            await asyncio.sleep(0.1)
        stop.set()
        for task in tasks:
            task.cancel()  # the waiters' connections close: the server cancels their jobs
        await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def run_load(
    url: str, waiters: int, pollers: int, interval: float, waiting: Synchronized, done: Event, out: Any
) -> None:
    """The load, in a process of its own so its client work does not slow the probe's timing; niced, as clients run on
    machines of their own."""
    os.nice(10)
    out.put(asyncio.run(_load(url, waiters, pollers, interval, waiting, done)))


# ------------------------------------------------------------------------------------------------------- the probe


def raw_get_status(port: int, path: str) -> int:
    """`GET path` on a new connection with a bare socket (as little client work as a kubelet's probe); the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def probe(url: str, bare_port: int, seconds: float, pause: float) -> tuple[dict[str, list[float]], int]:
    """In turn for `seconds`: `GET /healthz` on a new connection and on a kept-alive one, `POST /generate` (kept
    alive), and the bare server's `/healthz` on a new connection; their latencies in seconds by series, and how many
    answers were not the expected 200 / 202."""
    series: dict[str, list[float]] = {name: [] for name in SERIES}
    wrong = 0
    port = int(url.rsplit(":", 1)[1])
    kept = httpx.Client(base_url=url, timeout=30)

    def timed(name: str, call: Any, expected: int) -> None:
        nonlocal wrong
        started = time.perf_counter()
        wrong += call() != expected
        series[name].append(time.perf_counter() - started)

    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            timed("healthz_ms", lambda: raw_get_status(port, "/healthz"), 200)
            timed("healthz_kept_alive_ms", lambda: kept.get("/healthz").status_code, 200)
            timed("generate_ms", lambda: kept.post("/generate", json=GENERATE).status_code, 202)
            timed("bare_healthz_ms", lambda: raw_get_status(bare_port, "/healthz"), 200)
            time.sleep(pause)
    finally:
        kept.close()
    return series, wrong


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values) * 1000, 2),
        "p99": round(percentile(values, 0.99) * 1000, 2),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=200)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the probe runs under load")
    parser.add_argument("--quick", action="store_true", help="20 waiters, 5 pollers, 3 s (CI smoke)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.quick:
        args.waiters, args.pollers, args.seconds = 20, 5, 3.0
    pause = 0.05

    work = Path(tempfile.mkdtemp(prefix="imagegen-liveness-"))
    redis_port, api_port, metrics_port, bare_port = free_port(), free_port(), free_port(), free_port()
    (work / "bare_app.py").write_text(BARE_APP)
    env = {
        **os.environ,
        "IMAGEGEN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "IMAGEGEN_MODEL": "tiny",
        "IMAGEGEN_LOG_LEVEL": "WARNING",
        "IMAGEGEN_CACHE_DIR": os.environ.get("IMAGEGEN_CACHE_DIR", str(work / "cache")),
        "IMAGEGEN_MAX_QUEUE_DEPTH": "100000",
        "IMAGEGEN_OPENAI_TIMEOUT_SECONDS": "3600",  # waiters wait for the whole run
        "IMAGEGEN_METRICS_PORT": str(metrics_port),
        "IMAGEGEN_WARMUP_STEPS": "1",
        "IMAGEGEN_RESULT_TTL_SECONDS": "300",
    }
    processes = [
        subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
        )
    ]
    url = f"http://127.0.0.1:{api_port}"
    try:
        time.sleep(0.3)
        # The worker is niced: on a deployment it has a GPU node of its own, here its CPU diffusion would otherwise
        # take the API's cores. The API runs at normal priority, as does the probe.
        for prefix, command, log in (
            ([], ["api", "--port", str(api_port)], "api.log"),
            (["nice", "-n", "19"], ["worker"], "worker.log"),
        ):
            processes.append(
                subprocess.Popen(
                    [*prefix, sys.executable, "-m", "launcher.main", *command], env=env, stderr=(work / log).open("wb")
                )
            )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(bare_port), "--log-level", "warning"],
                cwd=work,
                env={**env, "PYTHONPATH": os.pathsep.join([str(work), os.getcwd()])},
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(f"{url}/readyz")
        wait_for(f"http://127.0.0.1:{bare_port}/healthz")
        wait_for(f"http://127.0.0.1:{metrics_port}/readyz", timeout=300)

        idle, idle_wrong = probe(url, bare_port, min(args.seconds, 5.0), pause)

        context = multiprocessing.get_context("spawn")
        waiting, done, out = context.Value("i", 0), context.Event(), context.Queue()
        load = context.Process(
            target=run_load, args=(url, args.waiters, args.pollers, args.poll_interval, waiting, done, out)
        )
        load.start()
        started = time.monotonic()
        while waiting.value < args.waiters and time.monotonic() - started < 60:
            time.sleep(0.1)
        time.sleep(1.0)  # the last waiters' requests reach the server and their jobs queue
        waiting_at_start = waiting.value
        loaded, wrong = probe(url, bare_port, args.seconds, pause)
        waiting_at_end = waiting.value
        done.set()
        counts = out.get(timeout=120)
        load.join(timeout=60)
    finally:
        for process in reversed(processes):  # the worker and the API first, while Redis still answers them
            process.terminate()
            process.wait(timeout=60)

    result = {
        "waiters": args.waiters,
        "pollers": args.pollers,
        "poll_interval_s": args.poll_interval,
        "seconds": args.seconds,
        "waiting_at_start": waiting_at_start,
        "waiting_at_end": waiting_at_end,
        "idle": {**{name: _ms(values) for name, values in idle.items()}, "unexpected": idle_wrong},
        "loaded": {**{name: _ms(values) for name, values in loaded.items()}, "unexpected": wrong},
        "load_answers": counts,
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
    }
    idle_ms, loaded_ms = result["idle"], result["loaded"]
    print(f"load: {args.waiters} clients waiting on POST /v1/images/generations, {args.pollers} pollers of")
    print(f"      GET /jobs/{{id}} every {args.poll_interval:g} s, for {args.seconds:g} s")
    print(f"      waiting requests in flight at the probe's start / end: {waiting_at_start} / {waiting_at_end}")
    print(f"      answers during the run: {json.dumps(counts, sort_keys=True)}")
    print(f"{'latency (ms)':<34}{'idle p50':>9}{'idle p99':>9}{'load p50':>9}{'load p99':>9}{'p99 ratio':>10}")
    for key, name in SERIES.items():
        before, under = idle_ms[key], loaded_ms[key]
        ratio = under["p99"] / max(before["p99"], 1e-6)
        print(
            f"{name:<34}{before['p50']:>9.1f}{before['p99']:>9.1f}{under['p50']:>9.1f}{under['p99']:>9.1f}{ratio:>10.1f}"
        )
    verdicts = [
        (f"/healthz p99 <= {HEALTHZ_P99_MS:g} ms under load", loaded_ms["healthz_ms"]["p99"] <= HEALTHZ_P99_MS),
        (
            f"POST /generate p99 <= {GENERATE_P99_MS:g} ms under load",
            loaded_ms["generate_ms"]["p99"] <= GENERATE_P99_MS,
        ),
        ("every probe answered 200 / 202", wrong == 0),
        ("the waiters were still waiting at the end", waiting_at_end >= args.waiters * 0.9),
    ]
    result["verdicts"] = print_verdicts(verdicts)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
