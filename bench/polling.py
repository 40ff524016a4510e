"""Polling against waiting: images/s of clients that follow their jobs by polling `GET /jobs/{id}` against the same
clients on the synchronous `POST /v1/images/generations` (the request waits, holding no thread), on one API and one
worker sharing the machine's cores.

The polling clients each POST `/generate`, then GET `/jobs/{id}` every `--interval` seconds until the job ends, then
GET its image; the waiting clients each POST `/v1/images/generations` (`response_format=b64_json`). What polling
costs the API's CPU is taken from the worker's cores, so the polling figure falls behind when a poll is expensive.
Also printed: the cores each party used in each phase (Redis, the API, the worker, and this process's client threads:
utime + stime per second of the phase), which says where the polling phase's CPU went.

    python -m bench.polling [--quick] [--model demo] [--clients 32] [--requests 4] [--interval 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import LeanClient, free_port, print_verdicts, wait_for
from bench.service_overhead import cpu_seconds

Client = httpx.Client | LeanClient


def polled(client: Client, model: str, interval: float) -> int:
    """One image by submitting and polling; returns its size in bytes."""
    job = client.post("/generate", json={"prompt": "a red circle", "model": model}).json()
    while job["status"] not in ("succeeded", "failed", "canceled", "expired"):
        time.sleep(interval)
        job = client.get(f"/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    return len(client.get(job["images"][0]).content)


def waited(client: Client, model: str) -> int:
    """One image by the synchronous OpenAI route; returns its size in bytes."""
    response = client.post(
        "/v1/images/generations",
        json={"prompt": "a red circle", "model": model, "response_format": "b64_json"},
    )
    response.raise_for_status()
    return len(base64.b64decode(response.json()["data"][0]["b64_json"]))


def phase(url: str, clients: int, requests: int, one: Callable[[Client], int], lean: bool = True) -> float:
    """Images/s of `clients` clients each getting `requests` images with `one` (on `LeanClient`s, else httpx's)."""

    def run(_: int) -> None:
        with LeanClient(url) if lean else httpx.Client(base_url=url, timeout=600) as client:
            for _ in range(requests):
                assert one(client) > 0

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    return clients * requests / (time.perf_counter() - started)


def measured(parties: dict[str, int], run: Callable[[], float]) -> tuple[float, dict[str, float]]:
    """What `run` returns, and the cores each of `parties` (name: pid) used meanwhile (CPU-seconds per second)."""
    before = {name: cpu_seconds(pid) for name, pid in parties.items()}
    started = time.perf_counter()
    value = run()
    seconds = time.perf_counter() - started
    return value, {name: round((cpu_seconds(pid) - before[name]) / seconds, 3) for name, pid in parties.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 clients x 2 requests (CI)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between polls")
    parser.add_argument(
        "--client",
        choices=("lean", "httpx"),
        default="lean",
        help="the clients' HTTP library: lean (bench.common.LeanClient, http.client) or httpx (~3x the CPU a request)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.requests = 4, 2

    work = Path(tempfile.mkdtemp(prefix="imagegen-bench-"))
    redis_port, api_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "IMAGEGEN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "IMAGEGEN_MODEL": args.model,
        "IMAGEGEN_LOG_LEVEL": "WARNING",
        "IMAGEGEN_CACHE_DIR": os.environ.get("IMAGEGEN_CACHE_DIR", str(work / "cache")),
        "IMAGEGEN_METRICS_PORT": str(metrics_port),
        "IMAGEGEN_WARMUP_STEPS": "1",
    }
    processes = [
        subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
        )
    ]
    try:
        time.sleep(0.3)
        for role in ("api", "worker"):
            command = [
                sys.executable,
                "-m",
                "launcher.main",
                role,
                *(["--port", str(api_port)] if role == "api" else []),
            ]
            processes.append(subprocess.Popen(command, env=env, stderr=(work / f"{role}.log").open("wb")))
        api = f"http://127.0.0.1:{api_port}"
        wait_for(f"{api}/readyz")
        wait_for(f"http://127.0.0.1:{metrics_port}/readyz")

        def waiting(client: Client) -> int:
            return waited(client, args.model)

        def polling(client: Client) -> int:
            return polled(client, args.model, args.interval)

        lean = args.client == "lean"
        phase(api, 1, 1, waiting, lean)  # warm: the first job of each process

        pids = [process.pid for process in processes]
        parties = {"redis": pids[0], "api": pids[1], "worker": pids[2], "clients": os.getpid()}
        waited_rate, waited_cores = measured(parties, lambda: phase(api, args.clients, args.requests, waiting, lean))
        polled_rate, polled_cores = measured(parties, lambda: phase(api, args.clients, args.requests, polling, lean))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

    ratio = polled_rate / waited_rate
    result = {
        "model": args.model,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "poll_interval_seconds": args.interval,
        "client": args.client,
        "waited_images_per_second": round(waited_rate, 3),
        "polled_images_per_second": round(polled_rate, 3),
        "polled_over_waited": round(ratio, 3),
        "cores_used": {"waited": waited_cores, "polled": polled_cores},
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
    }
    label = f"{args.clients} clients x {args.requests}, model {args.model}"
    print(f"{'measure (' + label + ')':<56}{'value':>10}")
    print(f"{'POST /v1/images/generations (waits; baseline), images/s':<56}{waited_rate:>10.2f}")
    print(f"{f'POST /generate + polling every {args.interval * 1000:.0f} ms, images/s':<56}{polled_rate:>10.2f}")
    print(f"{'polling / waiting':<56}{ratio:>10.2f}")
    for name in waited_cores:
        label = f"cores used by the {name}: waiting / polling"
        print(f"{label:<56}{waited_cores[name]:>5.2f} /{polled_cores[name]:>5.2f}")
    result["verdicts"] = print_verdicts([("polling within 10 % of waiting, images/s", ratio >= 0.9)])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
