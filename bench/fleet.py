"""Fleet simulation: how many jobs per second one Redis primary carries, and what it costs it per job.

For each fleet size of the sweep: a fresh `redis-server` on loopback (no persistence), `--workers` simulated workers
(the real job runtime: engine, RQ loop, JobStore, heartbeat and recovery sweeps, over a stand-in pipeline that sleeps
`--seconds-per-step` per step; many worker threads per process, `bench/fleet_workers.py`) and `--clients` submitting
threads that call the API's own submission code (`service.submission.submit`: model check against the live workers,
quota, backpressure, the job's transaction) straight, without HTTP: the HTTP layer scales out with API replicas and
is measured by `bench/service_overhead.py`. Clients offer `--load` x the fleet's capacity (workers / seconds per
job), open loop, for `--duration` seconds; then the benchmark drains and checks every job.

It reports, per fleet size: sustained jobs/s (finished in the measured window), Redis CPU (INFO `used_cpu_sys` +
`used_cpu_user` over the window, as a fraction of one core), Redis commands/s and per job, Redis CPU per job,
p50/p99 submit -> claim (the jobs' `created_at` -> `started_at`), whether any acknowledged job was lost (not ended
after the drain) or run twice (more than one attempt, or more than one `started` or terminal event), and how busy the
host's CPUs were (saturated: the simulation itself is the limit, not Redis; on a small machine Redis CPU per job is
the figure that carries over). The ratio printed against the baseline of the same run: sustained jobs/s over the
offered rate. docs/scaling.md turns the figures into a capacity model.

    python -m bench.fleet                        # sweep 25,50,100,200,400 workers
    python -m bench.fleet --sizes 200 --duration 60 --json fleet.json
    python -m bench.fleet --quick                # CI: 20 workers, a few seconds
    python -m bench.fleet --redis-cpu 0.05 --sizes 25,50,100,150 --keep-going   # Redis capped: run it to saturation

On a small machine the simulation saturates the host long before Redis (the workers' Python costs more per job than
Redis does). `--redis-cpu F` caps the Redis server at F of one core (a cgroup: `bench/cpu_cap.py`), so that it
saturates at a rate the host can offer; the benchmark then prints the rate reached against the capacity model's
prediction (F / Redis CPU per job below saturation) and the one-core equivalent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from bench.common import free_port, print_verdicts
from bench.cpu_cap import cpu_capped
from core import keys
from core.jobs import JobStore
from core.redis_connection import async_redis_client, redis_client
from core.schemas import GenerateRequest
from core.settings import Settings
from core.sharding import RedisShards
from service.auth import Caller
from service.errors import ApiError
from service.submission import SubmissionClients, submit

MODEL = "fleet"
# Redis is taken as saturated from this fraction of one core on (its command loop is one thread).
SATURATED_CPU = 0.9
# The first part of the run is left out of the window: workers' first heartbeats and sweeps, queues filling.
RAMP_FRACTION = 0.2


@dataclass
class ClientTally:
    """What the submitting clients got back."""

    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _env(args: argparse.Namespace, redis_url: str) -> dict[str, str]:
    """The settings the fleet's processes and the clients share."""
    return {
        **os.environ,
        "IMAGEGEN_REDIS_URL": redis_url,
        "IMAGEGEN_MODEL": MODEL,
        "IMAGEGEN_LOG_LEVEL": "WARNING",
        "IMAGEGEN_HEARTBEAT_SECONDS": str(args.heartbeat),
        "IMAGEGEN_MAX_BATCH": str(args.max_batch),
        "IMAGEGEN_MAX_QUEUE_DEPTH": "1000000",
        "IMAGEGEN_WARMUP_STEPS": "0",
    }


def _redis_cpu(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _host_cpu_times() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far (Linux `/proc/stat`; zeros elsewhere)."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _wait_for_workers(redis: Redis, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if redis.scard(keys.workers_key()) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{redis.scard(keys.workers_key())} of {count} workers registered in {timeout:.0f}s")


def _submit_loop(settings: Settings, rate: float, until: float, steps: int, tally: ClientTally) -> None:
    """Submit at `rate` jobs/s until `until` (open loop: a client that falls behind catches up at once). The API's
    submission is a coroutine: each client thread runs it on an event loop of its own."""
    redis = redis_client(settings)
    store = JobStore.from_settings(redis, settings)
    caller = Caller(key_id=None, admin=True)
    request = GenerateRequest(prompt="fleet", width=64, height=64, steps=steps, model=MODEL)
    clients = SubmissionClients(RedisShards(settings, redis_client, redis), RedisShards(settings, async_redis_client))
    next_at = time.monotonic()
    with asyncio.Runner() as loop:
        while next_at < until:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += 1.0 / rate
            seeded = request.model_copy(update={"seed": secrets.randbelow(2**31)})
            try:
                job, _ = loop.run(submit(seeded, clients, store, settings, caller))
            except ApiError:
                with tally.lock:
                    tally.refused += 1
                continue
            with tally.lock:
                tally.accepted.append(job.id)
        for client in clients.aio.all():
            loop.run(client.aclose())
    redis.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _audit(redis: Redis, job_ids: list[str]) -> dict[str, object]:
    """Each acknowledged job's record and stream: how many ended, were lost, ran twice; their timings."""
    records, streams = [], []
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        pipe = redis.pipeline(transaction=False)
        for job_id in chunk:
            pipe.hmget(keys.job_key(job_id), ["status", "created_at", "started_at", "finished_at", "attempts"])
        records += pipe.execute()
        pipe = redis.pipeline(transaction=False)
        for job_id in chunk:
            pipe.xrange(keys.job_events_key(job_id))
        streams += pipe.execute()
    terminal = {b"succeeded", b"failed", b"canceled", b"expired"}
    lost: list[str] = []
    twice: list[str] = []
    statuses: dict[str, int] = {}
    waits: list[float] = []
    finished: list[float] = []
    for job_id, (status, created, started, ended, attempts), stream in zip(job_ids, records, streams, strict=True):
        statuses[(status or b"missing").decode()] = statuses.get((status or b"missing").decode(), 0) + 1
        if status not in terminal:
            lost.append(job_id)
            continue
        types = [entry[b"type"] for _, entry in stream if b"type" in entry]
        ends = sum(1 for t in types if t in terminal)
        if int(attempts or 0) > 1 or types.count(b"started") > 1 or ends > 1:
            twice.append(job_id)
        if started:
            waits.append(float(started) - float(created))
        if ended:
            finished.append(float(ended))
    return {"lost": lost, "twice": twice, "statuses": statuses, "waits": waits, "finished": finished}


def _redis_saturated(row: dict[str, object]) -> bool:
    """Redis used at least SATURATED_CPU of the CPU it may use (one core, or its cap)."""
    return float(row["redis_cpu"]) >= SATURATED_CPU * float(row["redis_cpu_cap"])  # type: ignore[arg-type]


def _saturated(row: dict[str, object]) -> bool:
    return _redis_saturated(row) or float(row["host_cpu_busy"]) >= SATURATED_CPU  # type: ignore[arg-type]


def _limit(row: dict[str, object]) -> str | None:
    """What held a fleet size back, if anything: Redis, the machine running the simulation, or neither known."""
    if _redis_saturated(row):
        return "Redis saturated (its CPU)"
    if float(row["host_cpu_busy"]) >= SATURATED_CPU:  # type: ignore[arg-type]
        return "the host's CPUs are saturated: the simulation itself is the limit, not Redis"
    if float(row["sustained_over_offered"]) < 0.8:  # type: ignore[arg-type]
        return "jobs/s below 80 % of the offered rate"
    return None


def run_size(workers: int, args: argparse.Namespace, work: Path) -> dict[str, object]:
    """One fleet size against a fresh Redis; the row of the table."""
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    env = _env(args, redis_url)
    processes: list[subprocess.Popen[bytes]] = [
        subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
    ]
    capped = contextlib.ExitStack()
    try:
        if args.redis_cpu < 1:
            capped.enter_context(cpu_capped(processes[0].pid, args.redis_cpu))
        redis = Redis.from_url(redis_url)
        for _ in range(100):
            try:
                redis.ping()
                break
            except Exception:
                time.sleep(0.05)
        per_process = args.threads_per_process
        for first in range(0, workers, per_process):
            count = min(per_process, workers - first)
            argv = [sys.executable, "-m", "bench.fleet_workers", "--redis-url", redis_url, "--model", MODEL]
            argv += ["--workers", str(count), "--first", str(first), "--seconds-per-step", str(args.seconds_per_step)]
            log = (work / f"workers-{workers}-{first}.log").open("wb")
            processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait_for_workers(redis, workers, timeout=120 + workers * 0.2)

        settings = Settings(redis_url=redis_url, model=MODEL, max_queue_depth=1_000_000, log_level="WARNING")
        job_seconds = args.steps * args.seconds_per_step
        capacity = workers / job_seconds * args.max_batch
        offered = capacity * args.load
        tally = ClientTally()
        started = time.monotonic()
        until = started + args.duration
        clients = [
            threading.Thread(
                target=_submit_loop, args=(settings, offered / args.clients, until, args.steps, tally), daemon=True
            )
            for _ in range(args.clients)
        ]
        for client in clients:
            client.start()
        # The window: after the ramp, to the end of submissions.
        time.sleep(args.duration * RAMP_FRACTION)
        window_start_wall, window_start = time.time(), time.monotonic()
        redis.config_resetstat()
        cpu_before, host_before = _redis_cpu(redis), _host_cpu_times()
        for client in clients:
            client.join()
        window_end_wall, window = time.time(), time.monotonic() - window_start
        cpu = (_redis_cpu(redis) - cpu_before) / window
        host_after = _host_cpu_times()
        host_total = host_after[1] - host_before[1]
        host_busy = (host_after[0] - host_before[0]) / host_total if host_total else 0.0
        stats = redis.info("stats")
        commands = int(stats["total_commands_processed"])
        commandstats = {
            name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
            for name, value in redis.info("commandstats").items()
        }

        # Drain: every acknowledged job ends, unless one was lost.
        drain_deadline = time.monotonic() + args.drain_seconds + 2 * job_seconds
        audit = _audit(redis, tally.accepted)
        while audit["lost"] and time.monotonic() < drain_deadline:
            time.sleep(1.0)
            audit = _audit(redis, tally.accepted)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        capped.close()

    finished_in_window = [t for t in audit["finished"] if window_start_wall <= t <= window_end_wall]  # type: ignore[attr-defined]
    jobs_per_second = len(finished_in_window) / window
    waits: list[float] = audit["waits"]  # type: ignore[assignment]
    per_job = max(1, len(finished_in_window))
    top = sorted(commandstats.items(), key=lambda item: -item[1][1])[:8]
    return {
        "workers": workers,
        "offered_jobs_per_second": round(offered, 2),
        "jobs_per_second": round(jobs_per_second, 2),
        "sustained_over_offered": round(jobs_per_second / offered, 3),
        "redis_cpu": round(cpu, 3),
        "redis_cpu_cap": args.redis_cpu,
        # The machine's CPUs (the fleet, the clients, Redis and whatever else runs): near 1, the load generator
        # itself is the limit and the jobs/s say nothing about Redis.
        "host_cpu_busy": round(host_busy, 3),
        "redis_commands_per_second": round(commands / window, 1),
        "redis_commands_per_job": round(commands / per_job, 1),
        "redis_cpu_ms_per_job": round(cpu * window * 1000 / per_job, 3),
        "submit_to_claim_ms": {
            "p50": round(_percentile(waits, 0.5) * 1000, 2),
            "p99": round(_percentile(waits, 0.99) * 1000, 2),
        },
        "accepted": len(tally.accepted),
        "refused": tally.refused,
        "lost": len(audit["lost"]),  # type: ignore[arg-type]
        "done_twice": len(audit["twice"]),  # type: ignore[arg-type]
        "statuses": audit["statuses"],
        "top_commands_usec_per_job": {
            name: {"calls": round(calls / per_job, 2), "usec": round(usec / per_job, 1)} for name, (calls, usec) in top
        },
        "window_seconds": round(window, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="25,50,100,200,400", help="fleet sizes to sweep, comma-separated")
    parser.add_argument("--clients", type=int, default=8, help="submitting threads")
    parser.add_argument("--seconds-per-step", type=float, default=0.05, help="the stand-in's step time")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of submissions per fleet size")
    parser.add_argument("--load", type=float, default=0.9, help="offered load, as a fraction of the fleet's capacity")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="IMAGEGEN_HEARTBEAT_SECONDS of the workers")
    parser.add_argument("--max-batch", type=int, default=1, help="IMAGEGEN_MAX_BATCH of the workers")
    parser.add_argument("--threads-per-process", type=int, default=100, help="worker threads per fleet process")
    parser.add_argument("--drain-seconds", type=float, default=60.0, help="longest wait for the last jobs to end")
    parser.add_argument("--keep-going", action="store_true", help="run every size even once Redis saturates")
    parser.add_argument(
        "--redis-cpu",
        type=float,
        default=1.0,
        help="cap Redis at this fraction of one core (a cgroup: bench/cpu_cap.py), so that it saturates at a fleet "
        "size this machine can simulate; 1: no cap",
    )
    parser.add_argument("--quick", action="store_true", help="CI: 20 workers, 5 short steps, a few seconds")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.clients, args.steps, args.seconds_per_step, args.duration = "20", 2, 5, 0.02, 4.0
        args.heartbeat, args.drain_seconds = 1.0, 20.0
    sizes = [int(size) for size in args.sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="imagegen-fleet-"))
    rows: list[dict[str, object]] = []
    header = (
        f"{'workers':>7} {'offered/s':>9} {'jobs/s':>8} {'ratio':>6} {'redis cpu':>9} {'cmds/s':>9} {'cmds/job':>8} "
        f"{'cpu ms/job':>10} {'claim p50':>9} {'p99 ms':>8} {'host cpu':>8} {'lost':>5} {'twice':>5}"
    )
    print(header, flush=True)
    for workers in sizes:
        row = run_size(workers, args, work)
        rows.append(row)
        wait = row["submit_to_claim_ms"]
        print(
            f"{workers:>7} {row['offered_jobs_per_second']:>9} {row['jobs_per_second']:>8} "
            f"{row['sustained_over_offered']:>6} {row['redis_cpu']:>9.1%} {row['redis_commands_per_second']:>9} "
            f"{row['redis_commands_per_job']:>8} {row['redis_cpu_ms_per_job']:>10} {wait['p50']:>9} "  # type: ignore[index]
            f"{wait['p99']:>8} {row['host_cpu_busy']:>8.0%} {row['lost']:>5} {row['done_twice']:>5}",  # type: ignore[index]
            flush=True,
        )
        limit = _limit(row)
        if limit is not None and not args.keep_going:
            print(f"stopping the sweep at {workers} workers: {limit}")
            break

    cpu_ms = [float(row["redis_cpu_ms_per_job"]) for row in rows]  # type: ignore[arg-type]
    result: dict[str, object] = {
        "rows": rows,
        "settings": {
            "steps": args.steps,
            "seconds_per_step": args.seconds_per_step,
            "heartbeat_seconds": args.heartbeat,
            "max_batch": args.max_batch,
            "clients": args.clients,
            "load": args.load,
            "duration_seconds": args.duration,
        },
        # One core of Redis over the CPU one job costs it, at the largest fleet run (its sweeps included).
        "projected_jobs_per_second_one_redis": round(1000 / cpu_ms[-1], 1) if cpu_ms[-1] > 0 else None,
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end",
    }
    print(
        f"projected jobs/s one Redis core carries (1 s / Redis CPU per job at {sizes[len(rows) - 1]} workers): "
        f"{result['projected_jobs_per_second_one_redis']}"
    )
    saturated = [row for row in rows if _redis_saturated(row)]
    below = [row for row in rows if not _saturated(row)]
    if saturated and len(below) >= 2:
        # The capacity model's check: Redis CPU against jobs/s below saturation, a straight line (a fixed part, the
        # idle workers' heartbeats and blocking reads, plus a cost per job), extended to the cap; against the rate
        # the saturated sizes reached.
        per_job, fixed = statistics.linear_regression(
            [float(r["jobs_per_second"]) for r in below],  # type: ignore[arg-type]
            [float(r["redis_cpu"]) for r in below],  # type: ignore[arg-type]
        )
        predicted = (args.redis_cpu - fixed) / per_job
        reached = max(float(row["jobs_per_second"]) for row in saturated)  # type: ignore[arg-type]
        result["saturation"] = {
            "redis_cpu_cap": args.redis_cpu,
            "fit_fixed_cores": round(fixed, 4),
            "fit_cpu_ms_per_job": round(per_job * 1000, 3),
            "predicted_jobs_per_second": round(predicted, 1),
            "reached_jobs_per_second": round(reached, 1),
            "reached_over_predicted": round(reached / predicted, 3),
            "one_core_equivalent_jobs_per_second": round(reached / args.redis_cpu, 1),
        }
        print(
            f"Redis CPU below saturation: {fixed:.1%} of a core + {per_job * 1000:.2f} ms a job; saturated at "
            f"{args.redis_cpu:.0%} of a core: {reached:.1f} jobs/s reached, {predicted:.1f} predicted by that line "
            f"({reached / predicted:.2f}x); one core: ~{reached / args.redis_cpu:.0f} jobs/s"
        )
    verdicts = [
        ("no acknowledged job lost", all(row["lost"] == 0 for row in rows)),
        ("no job run twice", all(row["done_twice"] == 0 for row in rows)),
        ("sustained >= 80 % of offered while Redis and the host have headroom",
         all(float(row["sustained_over_offered"]) >= 0.8 for row in rows if not _saturated(row))),  # type: ignore[arg-type]
    ]  # fmt: skip
    for row in rows:
        if _limit(row) is not None:
            print(f"limit at {row['workers']} workers: {_limit(row)}")
    result["verdicts"] = print_verdicts(verdicts)
    result["median_redis_cpu_ms_per_job"] = round(statistics.median(cpu_ms), 3)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
