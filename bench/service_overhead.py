"""Service overhead on the CPU: what the API, Redis and the worker loop add around the model's own compute.

Measured in one run, against baselines from the same run:
  1. `POST /generate` throughput against a bare FastAPI endpoint that validates the same body (same host, same
     uvicorn, same client), at `--clients` concurrent clients.
  2. End-to-end latency minus in-worker compute time (the job's finished_at - started_at), p50/p99, at 1 and
     `--clients` concurrent clients, each following its job on the event stream. With many clients sharing one
     worker, the time a job waits behind the others (started_at - created_at) is taken out too: it is queueing, not
     overhead.
  3. Redis commands per job (INFO commandstats of a Redis server started for this run), in all and by command: the
     1-client phase (submit, claim, steps, result, the event stream followed, one GET of the finished job), less the
     background (sweeps, heartbeats, the webhook deliverer) measured on the idle deployment just before, less the
     benchmark's own INFO.
  4. The API's CPU-seconds per 1,000 polls of `GET /jobs/{id}` (its process's utime + stime from /proc), at
     `--clients` concurrent pollers: of queued jobs (position and ETA) and of finished ones, against the bare
     endpoint's CPU per 1,000 GETs of a stored job's JSON.

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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from bench.common import LeanClient, free_port, print_verdicts, wait_for
from core.queueing import model_queue

BODY = {"prompt": "overhead", "width": 64, "height": 64, "steps": 1, "sampler": "euler", "guidance_scale": 1.0}
BARE_APP = """
from fastapi import FastAPI
from core.schemas import GenerateRequest
app = FastAPI()
@app.post("/generate", status_code=202)
def generate(request: GenerateRequest) -> dict:
    return {"id": "0" * 32, "status": "queued", "request": request.model_dump(mode="json")}
STORED = {}
@app.put("/jobs/{job_id}")
def put_job(job_id: str, job: dict) -> None:
    STORED[job_id] = job
@app.get("/jobs/{job_id}")
def get_job(job_id: str) -> dict:
    return STORED[job_id]
"""
# The background commands of an idle deployment are measured over this long (the sweeps run every 5 s).
IDLE_SECONDS = 5.0


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


def follow_one(client: LeanClient, exclude_queue_wait: bool) -> tuple[float, str]:
    """Submit a job, follow its event stream to the end; returns the client-seen time minus the worker's compute
    (and minus the time it waited behind other jobs, when several clients share the one worker), and the job id."""
    started = time.perf_counter()
    job = client.post("/generate", json=BODY).json()
    for line in client.lines(f"/jobs/{job['id']}/events"):
        if line.startswith("event: ") and line[7:] in ("succeeded", "failed", "canceled", "expired"):
            break
    seen = time.perf_counter() - started
    timings = client.get(f"/jobs/{job['id']}").json()["timings"]
    created, began, finished = (datetime.fromisoformat(timings[k]) for k in ("created_at", "started_at", "finished_at"))
    waited = (began - created).total_seconds() if exclude_queue_wait else 0.0
    return seen - (finished - began).total_seconds() - waited, job["id"]


def latency_overhead(url: str, clients: int, jobs_per_client: int, keep_ids: bool = False) -> Any:
    """The overheads (see `follow_one`) of `jobs_per_client` jobs from each of `clients` clients; with `keep_ids`,
    also the ids of the jobs."""

    def run(_: int) -> list[tuple[float, str]]:
        # Light clients (bench.common.LeanClient): 32 httpx client threads in this process wait for each other's
        # share of the interpreter, and that wait would be counted as the service's overhead.
        with LeanClient(url, timeout=120) as client:
            return [follow_one(client, exclude_queue_wait=clients > 1) for _ in range(jobs_per_client)]

    with ThreadPoolExecutor(clients) as pool:
        done = [value for values in pool.map(run, range(clients)) for value in values]
    overheads = [overhead for overhead, _ in done]
    return (overheads, [job_id for _, job_id in done]) if keep_ids else overheads


def command_calls(redis: Redis) -> Counter[str]:
    """Calls so far of each command (INFO commandstats; commands run by scripts count as themselves)."""
    return Counter(
        {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in redis.info("commandstats").items()}
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def poll_cpu(url: str, pid: int, job_ids: list[str], clients: int, polls: int) -> float:
    """CPU-seconds the process `pid` spends per 1,000 GETs of /jobs/{id}, `clients` at a time, over `job_ids`."""
    per_client = polls // clients

    def run(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for n in range(per_client):
                client.get(f"/jobs/{job_ids[(offset + n * clients) % len(job_ids)]}").raise_for_status()

    before = cpu_seconds(pid)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    return (cpu_seconds(pid) - before) * 1000 / (per_client * clients)


def submit_ids(url: str, count: int) -> list[str]:
    with httpx.Client(base_url=url, timeout=60) as client:
        return [client.post("/generate", json=BODY).json()["id"] for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few requests (CI)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--json")
    args = parser.parse_args()
    total = 256 if args.quick else 2048
    jobs_one, jobs_many = (10, 2) if args.quick else (60, 6)
    polls = 400 if args.quick else 4000

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

        # Polls of queued jobs (position and ETA), the first 256 of those just queued, then the bare endpoint's GET of
        # one such job's JSON, stored there.
        queued_ids = model_queue(redis, "tiny").peek(256)
        queued_cpu = poll_cpu(api, processes[1].pid, queued_ids, args.clients, polls)
        sample = httpx.get(f"{api}/jobs/{queued_ids[0]}").json()
        httpx.put(f"{bare}/jobs/{queued_ids[0]}", json=sample).raise_for_status()
        bare_cpu = poll_cpu(bare, processes[2].pid, queued_ids[:1], args.clients, polls)
        redis.flushdb()

        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "launcher.main", "worker"], env=env, stderr=(work / "worker.log").open("wb")
            )
        )
        wait_for(f"http://127.0.0.1:{metrics_port}/readyz")
        submit_ids(api, 2)  # warm: the first job of a process reads and registers what later ones reuse
        time.sleep(1.0)
        idle_start, idle_began = command_calls(redis), time.perf_counter()
        time.sleep(IDLE_SECONDS)
        background = command_calls(redis) - idle_start
        idle_seconds = time.perf_counter() - idle_began
        calls_before, began = command_calls(redis), time.perf_counter()
        one, finished_ids = latency_overhead(api, 1, jobs_one, keep_ids=True)
        calls = command_calls(redis) - calls_before
        elapsed = time.perf_counter() - began
        calls["info"] -= 1  # the reading before this phase
        per_command = {
            name: round((count - background.get(name, 0) * elapsed / idle_seconds) / jobs_one, 2)
            for name, count in calls.items()
        }
        per_command = {name: value for name, value in per_command.items() if value >= 0.05}
        calls_per_job = sum(per_command.values())
        background_per_second = sum(background.values()) / idle_seconds
        many = latency_overhead(api, args.clients, jobs_many)
        finished_cpu = poll_cpu(api, processes[1].pid, finished_ids, args.clients, polls)
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
        "redis_commands_per_job_by_command": dict(sorted(per_command.items(), key=lambda item: -item[1])),
        "redis_background_commands_per_second": round(background_per_second, 1),
        "api_cpu_seconds_per_1000_polls": {"queued": round(queued_cpu, 3), "finished": round(finished_cpu, 3)},
        "bare_cpu_seconds_per_1000_gets": round(bare_cpu, 3),
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}, load average {os.getloadavg()[0]:.2f}",
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
    print(
        "  by command: "
        + ", ".join(f"{name} {value:g}" for name, value in result["redis_commands_per_job_by_command"].items())
    )
    print(f"{'  background (idle deployment), per second':<44}{background_per_second:>12.1f}")
    print(f"{'API CPU-s per 1,000 polls: queued / finished':<44}{queued_cpu:>6.2f} /{finished_cpu:>5.2f}")
    print(f"{'bare endpoint CPU-s per 1,000 GETs (baseline)':<44}{bare_cpu:>12.2f}")
    print(f"{'polls of a queued job / bare GETs, CPU':<44}{queued_cpu / bare_cpu:>12.2f}")
    verdicts = [
        ("p50 overhead <= 5 ms at 1 client", p50 <= 5),
        (f"p99 overhead <= 50 ms at {args.clients} clients", many_stats["p99"] <= 50),
        ("POST /generate >= 60 % of the bare endpoint", api_rps / bare_rps >= 0.6),
        ("<= 40 Redis commands per job", calls_per_job <= 40),
        ("a poll of a queued job costs the API <= 3x the bare GET's CPU", queued_cpu <= 3 * bare_cpu),
    ]
    result["verdicts"] = print_verdicts(verdicts)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
