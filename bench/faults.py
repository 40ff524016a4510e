"""Fault injection at random instants: does every acknowledged job reach an end, once?

Starts its own append-only redis-server, `imagegen api` and `imagegen worker` (the `tiny` model), then runs
`--trials` trials of each fault in `--faults`:

  worker           SIGKILL the worker; start a new one at once
  api              SIGKILL the API; start it again at once on the same port
  redis-everysec   SIGKILL redis-server (`appendfsync everysec`); start it again on the same AOF dir and port
  redis-always     the same with `appendfsync always`

A trial submits a few jobs of mixed length (the "main" jobs), draws the fault's instant uniformly over a window
that covers their whole life (submit, queued, claimed, running steps, storing the result, done: the window is the
time the same jobs take without a fault, measured at start-up, times 1.25), and submits a few more jobs at random
offsets around the instant. Then it kills, restarts what it killed (Redis after a random 0..`--redis-down-max` s),
and waits until every job it got a 202 for has ended, or `--recovery` seconds after the kill, whichever is first.
Each acknowledged job is then classified (`outcome`, `duplicate_reasons`, `ran_twice`): succeeded, failed with its
code, canceled, expired, still pending (queued, running, or no answer), or lost (404: its record is gone). Images
are read when a job is first seen succeeded, at the end of its trial and again at the end of the run: bytes that
change, a second terminal event, or stored images that differ from the record's count make it "duplicated".
Pending jobs are canceled after their trial is classified, and a process that died by itself is restarted (and
counted), so trials do not leak into each other; the stack otherwise stays up across trials.

    python -m bench.faults [--trials 30] [--faults worker,api,redis-everysec,redis-always] [--seed N] [--json out]

Goal: 0 pending, 0 lost, 0 duplicated. The processes' logs stay in the printed work directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from redis.exceptions import RedisError

from bench.common import free_port, print_verdicts
from core import keys
from core.event_stream import read_events

FAULTS = ("worker", "api", "redis-everysec", "redis-always")
TERMINAL = ("succeeded", "failed", "canceled", "expired")
OUTCOME_GROUPS = ("succeeded", "failed", "canceled", "expired", "pending", "lost")


@dataclass(frozen=True)
class JobSpec:
    """One job a trial submits."""

    label: str
    width: int
    steps: int
    num_images: int = 1

    def body(self, rng: random.Random) -> dict[str, Any]:
        return {
            "prompt": f"fault trial {self.label}",
            "width": self.width,
            "height": self.width,
            "steps": self.steps,
            "num_images": self.num_images,
            "seed": rng.randrange(2**31),
        }


# main: submitted together at the start of the trial (the long one's life is what the window covers);
# around: each submitted at a random offset of +-AROUND_SECONDS from the fault's instant.
MIXES: dict[str, dict[str, list[JobSpec]]] = {
    "standard": {
        "main": [
            JobSpec("short", 64, 2),
            JobSpec("long", 384, 12),
            JobSpec("medium", 256, 8),
            JobSpec("pair", 64, 3, 2),
        ],
        "around": [JobSpec("short", 64, 2), JobSpec("medium", 256, 6), JobSpec("long", 384, 10)],
    },
    # For the CI test: the same phases, a shorter life.
    "lean": {
        "main": [JobSpec("short", 64, 2), JobSpec("long", 192, 8), JobSpec("pair", 64, 2, 2)],
        "around": [JobSpec("short", 64, 2), JobSpec("medium", 128, 4)],
    },
}
AROUND_SECONDS = 0.3
WINDOW_FACTOR = 1.25


# --- classification (pure functions over what was observed of one job) -------------------------------------------


@dataclass
class JobObservation:
    """What a trial saw of one acknowledged job, at the end of its recovery window (and at the end of the run)."""

    job_id: str
    fault: str
    trial: int
    label: str
    requested_images: int
    http_status: int = 0  # of GET /jobs/{id} when classified; 0: no answer
    status: str | None = None
    error_code: str | None = None
    attempts: int = 0
    record_images: int = 0  # len(job.images)
    stored_images: int = 0  # image keys present in Redis
    event_types: list[str] = field(default_factory=list)
    image_reads: list[list[str]] = field(default_factory=list)  # per read: sha256 of each image
    gone_later: bool = False  # its record answered 404 at the end of the run, after its trial had seen it


def outcome(obs: JobObservation) -> str:
    """`succeeded`, `failed:<code>`, `canceled`, `expired`, `pending:<queued|running|no-answer>` or `lost`."""
    if obs.http_status == 404:
        return "lost"
    if obs.http_status != 200 or obs.status is None:
        return "pending:no-answer"
    if obs.status in ("queued", "running"):
        return f"pending:{obs.status}"
    if obs.status == "failed":
        return f"failed:{obs.error_code or 'no-code'}"
    return obs.status


def outcome_group(name: str) -> str:
    """The column an outcome counts in: succeeded, failed, canceled, expired, pending or lost."""
    return name.split(":", 1)[0]


def duplicate_reasons(obs: JobObservation) -> list[str]:
    """Why this job's outcome was delivered more than once or changed; empty when it was delivered once."""
    reasons = []
    if obs.event_types.count("succeeded") > 1:
        reasons.append("two succeeded events")
    if sum(obs.event_types.count(kind) for kind in TERMINAL) > 1:
        reasons.append("more than one terminal event")
    reads = [read for read in obs.image_reads if read]
    if any(read != reads[0] for read in reads[1:]):
        reasons.append("image bytes changed between reads")
    if any(digest.startswith("http-") for read in reads for digest in read):
        reasons.append("an image of the record not served")
    if obs.status == "succeeded" and obs.http_status == 200:
        if obs.stored_images != obs.record_images:
            reasons.append(f"{obs.stored_images} images stored, record lists {obs.record_images}")
        if obs.record_images != obs.requested_images:
            reasons.append(f"record lists {obs.record_images} images, {obs.requested_images} asked")
    return reasons


def ran_twice(obs: JobObservation) -> bool:
    """Started more than once (allowed: at-least-once execution)."""
    return obs.attempts > 1 or obs.event_types.count("started") > 1


@dataclass
class TrialRecord:
    """One trial: its fault, instant, what the long main job was doing then, and how it went."""

    fault: str
    trial: int
    instant_s: float
    phase: str
    redis_down_s: float = 0.0
    acknowledged: int = 0
    refused: int = 0  # submissions answered with an error or not at all (not acknowledged: not counted)
    seconds: float = 0.0
    recovered_s: float | None = None  # kill -> every acknowledged job ended; None: the window ran out
    died_by_itself: list[str] = field(default_factory=list)


def tabulate(observations: list[JobObservation], trials: list[TrialRecord], faults: list[str]) -> dict[str, dict]:
    """Per fault: counts of each outcome group and code, duplicated, ran twice, gone later, and trial figures."""
    table: dict[str, dict] = {}
    for fault in faults:
        jobs = [o for o in observations if o.fault == fault]
        runs = [t for t in trials if t.fault == fault]
        outcomes = Counter(outcome(o) for o in jobs)
        groups = Counter(outcome_group(name) for name in outcomes.elements())
        recovered = [t.recovered_s for t in runs if t.recovered_s is not None]
        table[fault] = {
            "trials": len(runs),
            "jobs": len(jobs),
            **{group: groups.get(group, 0) for group in OUTCOME_GROUPS},
            "outcomes": dict(sorted(outcomes.items())),
            "duplicated": sum(1 for o in jobs if duplicate_reasons(o)),
            "ran_twice": sum(1 for o in jobs if ran_twice(o)),
            "gone_later": sum(1 for o in jobs if o.gone_later),
            "refused": sum(t.refused for t in runs),
            "died_by_itself": dict(Counter(name for t in runs for name in t.died_by_itself)),
            "phases": dict(Counter(t.phase for t in runs)),
            "seconds_per_trial": round(sum(t.seconds for t in runs) / len(runs), 1) if runs else 0.0,
            "max_recovery_s": round(max(recovered), 1) if recovered else None,
            "unrecovered_trials": sum(1 for t in runs if t.recovered_s is None),
        }
    return table


def verdicts(table: dict[str, dict]) -> list[tuple[str, bool]]:
    """The goal: 0 pending, 0 lost acknowledged jobs (at the end of their trial or later), 0 duplicated images."""
    total = {key: sum(row[key] for row in table.values()) for key in ("pending", "lost", "gone_later", "duplicated")}
    return [
        ("0 pending acknowledged jobs after the recovery window", total["pending"] == 0),
        ("0 lost acknowledged jobs", total["lost"] + total["gone_later"] == 0),
        ("0 duplicated images", total["duplicated"] == 0),
    ]


def render(table: dict[str, dict]) -> str:
    """The fault x outcome table, then each fault's failure codes, instants and self-exits."""
    columns = ["trials", "jobs", *OUTCOME_GROUPS, "duplicated", "ran_twice", "gone_later", "s/trial"]
    lines = [f"{'fault':<16}" + "".join(f"{name:>11}" for name in columns)]
    for fault, row in table.items():
        values = [*(row[name] for name in columns[:-1]), row["seconds_per_trial"]]
        lines.append(f"{fault:<16}" + "".join(f"{value:>11}" for value in values))
    for fault, row in table.items():
        detail = {
            "outcomes": row["outcomes"],
            "instant (long job was)": row["phases"],
            "processes that died by themselves": row["died_by_itself"],
            "refused submissions": row["refused"],
            "slowest recovery s": row["max_recovery_s"],
            "trials the window ran out": row["unrecovered_trials"],
        }
        lines.append(f"{fault}: " + "; ".join(f"{k} {v}" for k, v in detail.items()))
    return "\n".join(lines)


# --- the stack -------------------------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FaultStack:
    """Its own append-only redis-server, one `imagegen api` and one `imagegen worker`, each restartable."""

    def __init__(self, work: Path, cache_dir: Path, heartbeat: float, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.redis_dir = work / "redis"
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis_port, self.api_port = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.fsync = "everysec"
        self.env = {
            **os.environ,
            "IMAGEGEN_REDIS_URL": self.redis_url,
            "IMAGEGEN_MODEL": "tiny",
            "IMAGEGEN_CACHE_DIR": str(cache_dir),
            "IMAGEGEN_HEARTBEAT_SECONDS": str(heartbeat),
            "IMAGEGEN_REAPER_SECONDS": str(heartbeat),
            "IMAGEGEN_WARMUP_STEPS": "1",
            "IMAGEGEN_LOG_LEVEL": "INFO",
            "IMAGEGEN_METRICS_HOST": "127.0.0.1",
            "IMAGEGEN_QUEUE_WITHOUT_WORKERS": "true",  # jobs submitted while the worker restarts are accepted
            "IMAGEGEN_RESULT_TTL_SECONDS": "86400",  # results outlive the run: the last re-read still finds them
            **(env or {}),
        }
        self.redis: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_metrics = ""
        self.starts = Counter()
        self.client = httpx.Client(base_url=self.url, timeout=10)
        self.redis_client = Redis.from_url(self.redis_url, socket_timeout=3, socket_connect_timeout=2)

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        self.starts[name] += 1
        log = (self.work / f"{name}.{self.starts[name]}.log").open("wb")
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_redis(self) -> None:
        command = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.redis_dir)]
        command += ["--save", "", "--appendonly", "yes", "--appendfsync", self.fsync]
        self.redis = self._spawn("redis", command)
        _wait(lambda: self.redis_client.ping(), 30, "redis-server")

    def start_api(self) -> None:
        self.api = self._spawn(
            "api", [sys.executable, "-m", "launcher.main", "api", "--port", str(self.api_port)], self.env
        )

    def start_worker(self) -> None:
        port = free_port()
        self.worker_metrics = f"http://127.0.0.1:{port}"
        env = {**self.env, "IMAGEGEN_METRICS_PORT": str(port)}
        self.worker = self._spawn("worker", [sys.executable, "-m", "launcher.main", "worker"], env)

    def set_fsync(self, mode: str) -> None:
        """`appendfsync` of the running server and of its next starts."""
        if mode != self.fsync:
            self.redis_client.config_set("appendfsync", mode)
            self.fsync = mode

    def kill(self, name: str) -> None:
        """SIGKILL one process and reap it."""
        process = getattr(self, name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def ensure_up(self, timeout: float = 120) -> list[str]:
        """Restart whatever died (or stayed unready) by itself, then wait until all three answer ready; returns what
        had to be restarted."""
        restarted = []
        if self.redis is None or self.redis.poll() is not None:
            restarted.append("redis")
            self.start_redis()
        if self.api is None or self.api.poll() is not None:
            restarted.append("api")
            self.start_api()
        if self.worker is None or self.worker.poll() is not None:
            restarted.append("worker")
            self.start_worker()
        try:
            _wait(lambda: self.client.get("/readyz").status_code == 200, timeout / 2, "the API")
        except TimeoutError:
            restarted.append("api (not ready)")
            self.kill("api")
            self.start_api()
            _wait(lambda: self.client.get("/readyz").status_code == 200, timeout / 2, "the API")
        try:
            _wait(lambda: httpx.get(f"{self.worker_metrics}/readyz", timeout=2).status_code == 200, timeout, "worker")
        except TimeoutError:
            restarted.append("worker (not ready)")
            self.kill("worker")
            self.start_worker()
            _wait(lambda: httpx.get(f"{self.worker_metrics}/readyz", timeout=2).status_code == 200, timeout, "worker")
        return restarted

    def stop(self) -> None:
        self.client.close()
        for process in (self.worker, self.api, self.redis):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, RedisError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s")


# --- one trial ---------------------------------------------------------------------------------------------------


class Submissions:
    """The trial's submissions, from several threads: acknowledged jobs (id -> spec) and refusals."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.acknowledged: dict[str, JobSpec] = {}
        self.ids_by_label: dict[str, str] = {}
        self.refused = 0

    def submit(self, specs: list[JobSpec], bodies: list[dict[str, Any]], prefix: str) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for spec, body in zip(specs, bodies, strict=True):
                try:
                    response = client.post("/generate", json=body)
                except httpx.HTTPError:
                    response = None
                with self.lock:
                    if response is not None and response.status_code == 202:
                        job_id = response.json()["id"]
                        self.acknowledged[job_id] = spec
                        self.ids_by_label[f"{prefix}{spec.label}"] = job_id
                    else:
                        self.refused += 1


def phase_of(job: dict[str, Any] | None) -> str:
    """What a job was doing: submitting (no 202 yet), queued, running, storing (last step done), done."""
    if job is None:
        return "submitting"
    status, progress = job["status"], job.get("progress") or {}
    if status == "running":
        return "storing" if progress.get("total") and progress.get("step", 0) >= progress["total"] else "running"
    return "done" if status in TERMINAL else status


class Trials:
    """Runs the trials over one `FaultStack`, keeping every observation for the table and the final re-read."""

    def __init__(self, stack: FaultStack, mix: str, rng: random.Random, recovery: float, redis_down_max: float):
        self.stack = stack
        self.mix = MIXES[mix]
        self.rng = rng
        self.recovery = recovery
        self.redis_down_max = redis_down_max
        self.window = 0.0
        self.observations: list[JobObservation] = []
        self.records: list[TrialRecord] = []

    def calibrate(self) -> float:
        """The window: the time the main jobs take from submission to their end without a fault, x1.25."""
        submissions = Submissions(self.stack.url)
        started = time.monotonic()
        submissions.submit(self.mix["main"], [s.body(self.rng) for s in self.mix["main"]], "main-")
        ids = list(submissions.acknowledged)
        self._wait_terminal(ids, time.monotonic() + 120, {})
        self.window = (time.monotonic() - started) * WINDOW_FACTOR
        statuses = [(job or {}).get("status") for job in (self._get(job_id)[1] for job_id in ids)]
        if len(ids) != len(self.mix["main"]) or any(status != "succeeded" for status in statuses):
            raise RuntimeError(
                f"the stack does not run jobs without a fault: {statuses}, {submissions.refused} refused"
            )
        return self.window

    def _get(self, job_id: str) -> tuple[int, dict[str, Any] | None]:
        try:
            response = self.stack.client.get(f"/jobs/{job_id}", timeout=5)
        except httpx.HTTPError:
            return 0, None
        return response.status_code, response.json() if response.status_code == 200 else None

    def _read_images(self, job: dict[str, Any]) -> list[str]:
        """sha256 of each image as served (`http-<status>` for one not served); empty when the API did not answer."""
        digests = []
        for url in job["images"]:
            try:
                response = self.stack.client.get(url, timeout=5)
            except httpx.HTTPError:
                return []
            digests.append(_digest(response.content) if response.status_code == 200 else f"http-{response.status_code}")
        return digests

    def _wait_terminal(self, ids: list[str], deadline: float, first_reads: dict[str, list[str]]) -> bool:
        """Poll until each job is terminal or answers 404; read a job's images when it is first seen succeeded."""
        settled: set[str] = set()
        while time.monotonic() < deadline:
            for job_id in ids:
                if job_id in settled:
                    continue
                code, job = self._get(job_id)
                if code == 404 or (job is not None and job["status"] in TERMINAL):
                    settled.add(job_id)
                    if job is not None and job["status"] == "succeeded":
                        first_reads[job_id] = self._read_images(job)
            if len(settled) == len(ids):
                return True
            time.sleep(0.1)
        return False

    def reobserve(self, obs: JobObservation) -> None:
        """Read the job's record, events, stored image keys and image bytes (one more read)."""
        code, job = self._get(obs.job_id)
        obs.http_status = code
        if job is not None:
            obs.status = job["status"]
            obs.error_code = (job.get("error") or {}).get("code")
            obs.attempts = job.get("attempts", 0)
            obs.record_images = len(job["images"])
            if job["status"] == "succeeded":
                obs.image_reads.append(self._read_images(job))
        try:
            obs.event_types = [entry.type for entry in read_events(self.stack.redis_client, obs.job_id)]
            probe = range(max(obs.record_images, obs.requested_images) + 2)
            obs.stored_images = sum(self.stack.redis_client.exists(keys.job_image_key(obs.job_id, n)) for n in probe)
        except RedisError:
            pass

    def run(self, fault: str, trial: int) -> TrialRecord:
        stack, rng = self.stack, self.rng
        stack.ensure_up()
        stack.set_fsync("always" if fault == "redis-always" else "everysec")
        instant = rng.uniform(0, self.window)
        around = [
            (max(0.0, instant + rng.uniform(-AROUND_SECONDS, AROUND_SECONDS)), spec) for spec in self.mix["around"]
        ]
        down = rng.uniform(0, self.redis_down_max) if fault.startswith("redis") else 0.0
        main_bodies = [spec.body(rng) for spec in self.mix["main"]]
        around_bodies = [spec.body(rng) for _, spec in around]

        submissions = Submissions(stack.url)
        started = time.monotonic()
        threads = [threading.Thread(target=submissions.submit, args=(self.mix["main"], main_bodies, "main-"))]
        for (offset, spec), body in zip(around, around_bodies, strict=True):
            threads.append(threading.Thread(target=_later, args=(started + offset, submissions, spec, body)))
        for thread in threads:
            thread.start()

        time.sleep(max(0.0, started + instant - time.monotonic()))
        long_id = submissions.ids_by_label.get("main-long")
        phase = phase_of(self._get(long_id)[1] if long_id else None)
        target = {"worker": "worker", "api": "api"}.get(fault, "redis")
        stack.kill(target)
        killed_at = time.monotonic()
        if target == "worker":
            stack.start_worker()
        elif target == "api":
            stack.start_api()
        else:
            time.sleep(down)
            stack.start_redis()

        for thread in threads:
            thread.join(timeout=30)
        first_reads: dict[str, list[str]] = {}
        ids = list(submissions.acknowledged)
        recovered = self._wait_terminal(ids, killed_at + self.recovery, first_reads)
        record = TrialRecord(fault, trial, round(instant, 3), phase, round(down, 3), len(ids), submissions.refused)
        record.recovered_s = round(time.monotonic() - killed_at, 2) if recovered else None

        for job_id, spec in submissions.acknowledged.items():
            obs = JobObservation(job_id, fault, trial, spec.label, spec.num_images)
            if job_id in first_reads:
                obs.image_reads.append(first_reads[job_id])
            self.reobserve(obs)
            self.observations.append(obs)
            if outcome_group(outcome(obs)) == "pending":
                with contextlib.suppress(httpx.HTTPError):  # so it does not run into the next trial
                    stack.client.delete(f"/jobs/{job_id}", timeout=5)
        # A process that exited (or never got ready again) by itself is restarted here, before the next trial.
        record.died_by_itself = stack.ensure_up(timeout=60)
        record.seconds = round(time.monotonic() - started, 2)
        self.records.append(record)
        return record

    def final_reread(self) -> None:
        """Read every job seen succeeded once more: changed bytes, late terminal events or a record gone."""
        for obs in self.observations:
            if obs.status != "succeeded" or obs.http_status != 200:
                continue
            code, job = self._get(obs.job_id)
            if code == 404:
                obs.gone_later = True
                continue
            if job is not None:
                obs.image_reads.append(self._read_images(job))
            with contextlib.suppress(RedisError):
                obs.event_types = [entry.type for entry in read_events(self.stack.redis_client, obs.job_id)]


def _later(at: float, submissions: Submissions, spec: JobSpec, body: dict[str, Any]) -> None:
    time.sleep(max(0.0, at - time.monotonic()))
    submissions.submit([spec], [body], "around-")


def run_trials(
    faults: list[str],
    trials: int,
    work: Path,
    cache_dir: Path,
    *,
    seed: int,
    mix: str = "standard",
    recovery: float = 60.0,
    redis_down_max: float = 2.0,
    heartbeat: float = 1.0,
    window: float | None = None,
    log: Any = print,
) -> tuple[dict[str, dict], Trials]:
    """Start a stack in `work`, run `trials` trials of each fault, re-read everything at the end; the table and the
    trials (their observations and records)."""
    stack = FaultStack(work, cache_dir, heartbeat)
    runner = Trials(stack, mix, random.Random(seed), recovery, redis_down_max)
    try:
        stack.ensure_up()
        measured = runner.calibrate()
        if window:
            runner.window = window
        log(
            f"window {runner.window:.2f} s "
            f"(measured: the main jobs' life without a fault x{WINDOW_FACTOR}, {measured:.2f} s)"
        )
        for fault in faults:
            for trial in range(trials):
                record = runner.run(fault, trial)
                log(
                    f"{fault} #{trial}: kill at {record.instant_s:.2f} s ({record.phase}), "
                    f"{record.acknowledged} acknowledged, {record.refused} refused, "
                    f"ended {record.recovered_s if record.recovered_s is not None else 'NOT ALL'} s after the kill, "
                    f"trial {record.seconds:.1f} s"
                    + (f", died by itself, restarted: {record.died_by_itself}" if record.died_by_itself else "")
                )
        stack.ensure_up()
        runner.final_reread()
    finally:
        stack.stop()
    return tabulate(runner.observations, runner.records, faults), runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30, help="trials of each fault")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--seed", type=int, default=None, help="the RNG seed (default: random, printed)")
    parser.add_argument("--mix", choices=sorted(MIXES), default="standard")
    parser.add_argument("--recovery", type=float, default=60.0, help="seconds after the kill for every job to end")
    parser.add_argument("--window", type=float, help="seconds the instant is drawn over (default: measured)")
    parser.add_argument("--redis-down-max", type=float, default=2.0, help="Redis stays down 0..this many seconds")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="IMAGEGEN_HEARTBEAT_SECONDS and _REAPER_SECONDS")
    parser.add_argument(
        "--cache-dir", default=os.environ.get("IMAGEGEN_CACHE_DIR", str(Path.home() / ".cache/imagegen"))
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, AOF) even on success")
    parser.add_argument("--json")
    args = parser.parse_args()
    faults = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = [name for name in faults if name not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    if shutil.which("redis-server") is None:
        parser.error("needs redis-server on PATH")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    work = Path(tempfile.mkdtemp(prefix="imagegen-faults-"))
    print(
        f"seed {seed}; {args.trials} trials of {', '.join(faults)}; mix {args.mix}; recovery window "
        f"{args.recovery:.0f} s; heartbeat {args.heartbeat} s; logs in {work}",
        flush=True,
    )
    started = time.monotonic()
    table, runner = run_trials(
        faults,
        args.trials,
        work,
        Path(args.cache_dir),
        seed=seed,
        mix=args.mix,
        recovery=args.recovery,
        redis_down_max=args.redis_down_max,
        window=args.window,
        heartbeat=args.heartbeat,
        log=lambda line: print(line, flush=True),
    )
    print()
    print(render(table))
    results = verdicts(table)
    print_verdicts(results)
    duplicated = [(o.job_id, duplicate_reasons(o)) for o in runner.observations if duplicate_reasons(o)]
    for job_id, reasons in duplicated[:20]:
        print(f"duplicated: {job_id}: {', '.join(reasons)}")
    print(f"seed {seed}; {time.monotonic() - started:.0f} s in all; logs in {work}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "seed": seed,
                    "table": table,
                    "verdicts": {name: ok for name, ok in results},
                    "trials": [asdict(r) for r in runner.records],
                    "jobs": [{**asdict(o), "outcome": outcome(o)} for o in runner.observations],
                },
                indent=2,
            )
        )
    if all(ok for _, ok in results) and not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
