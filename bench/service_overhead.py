"""Service overhead on the CPU: what the API, Redis and the worker loop add around the model's own compute.

Measured in one run, against baselines from the same run:
  1. `POST /generate` throughput against a bare FastAPI endpoint that validates the same body (same host, same
     uvicorn, same client), at `--clients` concurrent clients.
  2. End-to-end latency minus in-worker compute time (the job's finished_at - started_at), p50/p99, at 1 and
     `--clients` concurrent clients, each following its job on the event stream. With many clients sharing one
     worker, the time a job waits behind the others (started_at - created_at) is taken out too: it is queueing, not
     overhead.
  3. Redis commands per job (INFO commandstats of a Redis server started for this run).

    python bench/service_overhead.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
from redis import Redis

from bench.common import free_port, print_verdicts, wait_for

BODY = {"prompt": "overhead", "width": 64, "height": 64, "steps": 1, "sampler": "euler", "guidance_scale": 1.0}
BARE_APP = """
from fastapi import FastAPI
from core.schemas import GenerateRequest
app = FastAPI()
@app.post("/generate", status_code=202)
def generate(request: GenerateRequest) -> dict:
    return {"id": "0" * 32, "status": "queued", "request": request.model_dump(mode="json")}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput(url: str, path: str, clients: int, total: int) -> float:
    """Requests per second for `total` POSTs spread over `clients` threads."""
    per_client = total // clients

    def run(_: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(per_client):
                client.post(path, json=BODY).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    return per_client * clients / (time.perf_counter() - started)


def follow_one(client: httpx.Client, exclude_queue_wait: bool) -> float:
    """Submit a job, follow its event stream to the end; returns the client-seen time minus the worker's compute
    (and minus the time it waited behind other jobs, when several clients share the one worker)."""
    started = time.perf_counter()
    job = client.post("/generate", json=BODY).json()
    with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: ") and line[7:] in ("succeeded", "failed", "canceled", "expired"):
                break
    seen = time.perf_counter() - started
    timings = client.get(f"/jobs/{job['id']}").json()["timings"]
    created, began, finished = (datetime.fromisoformat(timings[k]) for k in ("created_at", "started_at", "finished_at"))
    waited = (began - created).total_seconds() if exclude_queue_wait else 0.0
    return seen - (finished - began).total_seconds() - waited


def latency_overhead(url: str, clients: int, jobs_per_client: int) -> list[float]:
    def run(_: int) -> list[float]:
        with httpx.Client(base_url=url, timeout=120) as client:
            return [follow_one(client, exclude_queue_wait=clients > 1) for _ in range(jobs_per_client)]

    with ThreadPoolExecutor(clients) as pool:
        return [value for values in pool.map(run, range(clients)) for value in values]


def redis_calls(redis: Redis) -> int:
    return sum(int(stats["calls"]) for name, stats in redis.info("commandstats").items() if name.startswith("cmdstat_"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few requests (CI)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--json")
    args = parser.parse_args()
    total = 256 if args.quick else 2048
    jobs_one, jobs_many = (10, 2) if args.quick else (60, 6)

    work = Path(tempfile.mkdtemp(prefix="imagegen-bench-"))
    redis_port, api_port, bare_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {
        **os.environ,
        "IMAGEGEN_REDIS_URL": redis_url,
        "IMAGEGEN_MODEL": "tiny",
        "IMAGEGEN_LOG_LEVEL": "WARNING",
        "IMAGEGEN_CACHE_DIR": os.environ.get("IMAGEGEN_CACHE_DIR", str(work / "cache")),
        "IMAGEGEN_MAX_QUEUE_DEPTH": "100000",
        "IMAGEGEN_QUEUE_WITHOUT_WORKERS": "true",  # the throughput phase queues before the worker starts
        "IMAGEGEN_METRICS_PORT": str(metrics_port),
        "IMAGEGEN_WARMUP_STEPS": "1",
        "IMAGEGEN_MAX_BATCH": "1",
    }
    processes = [
        subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
        ),
    ]
    (work / "bare_app.py").write_text(BARE_APP)
    try:
        time.sleep(0.3)
        redis = Redis.from_url(redis_url)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "launcher.main", "api", "--port", str(api_port)],
                env=env,
                stderr=(work / "api.log").open("wb"),
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
        api, bare = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
        wait_for(f"{api}/readyz")
        wait_for(f"{bare}/docs")

        bare_rps = throughput(bare, "/generate", args.clients, total)
        api_rps = throughput(api, "/generate", args.clients, total)  # no worker yet: the jobs only queue
        redis.flushdb()

        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "launcher.main", "worker"], env=env, stderr=(work / "worker.log").open("wb")
            )
        )
        wait_for(f"http://127.0.0.1:{metrics_port}/readyz")
        calls_before = redis_calls(redis)
        one = latency_overhead(api, 1, jobs_one)
        calls_per_job = (redis_calls(redis) - calls_before) / jobs_one
        many = latency_overhead(api, args.clients, jobs_many)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

    result = {
        "clients": args.clients,
        "bare_rps": round(bare_rps, 1),
        "generate_rps": round(api_rps, 1),
        "generate_over_bare": round(api_rps / bare_rps, 3),
        "overhead_ms_1_client": {
            "p50": round(statistics.median(one) * 1000, 2),
            "p99": round(percentile(one, 0.99) * 1000, 2),
        },
        f"overhead_ms_{args.clients}_clients": {
            "p50": round(statistics.median(many) * 1000, 2),
            "p99": round(percentile(many, 0.99) * 1000, 2),
        },
        "redis_commands_per_job": round(calls_per_job, 1),
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
    }
    p50, p99 = result["overhead_ms_1_client"]["p50"], result["overhead_ms_1_client"]["p99"]
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'bare FastAPI endpoint (baseline), req/s':<44}{bare_rps:>12.1f}")
    print(f"{'POST /generate, req/s':<44}{api_rps:>12.1f}")
    print(f"{'POST /generate / bare':<44}{api_rps / bare_rps:>12.2f}")
    print(f"{'overhead p50 / p99 at 1 client, ms':<44}{p50:>6.1f} /{p99:>5.1f}")
    many_stats = result[f"overhead_ms_{args.clients}_clients"]
    label = f"same at {args.clients} clients, less queue wait, ms"
    print(f"{label:<44}{many_stats['p50']:>6.1f} /{many_stats['p99']:>5.1f}")
    print(f"{'Redis commands per job (with its stream)':<44}{calls_per_job:>12.1f}")
    verdicts = [
        ("p50 overhead <= 10 ms at 1 client", p50 <= 10),
        ("p99 overhead <= 50 ms at 1 client", p99 <= 50),
        ("POST /generate >= 40 % of the bare endpoint", api_rps / bare_rps >= 0.4),
    ]
    result["verdicts"] = print_verdicts(verdicts)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
