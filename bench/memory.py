"""Memory over many jobs: the worker's and the API's resident memory (and GPU memory on CUDA) sampled while
`--jobs` small jobs run through real processes; growth after the warm-up should be noise.

    python bench/memory.py [--jobs 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import free_port, wait_for

BODY = {"prompt": "memory", "width": 64, "height": 64, "steps": 2, "sampler": "euler", "num_images": 2}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def gpu_mib(metrics_url: str) -> float | None:
    for line in httpx.get(metrics_url).text.splitlines():
        if line.startswith("imagegen_gpu_memory_reserved_bytes"):
            return float(line.split()[-1]) / 2**20
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagegen-mem-"))
    redis_port, api_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "IMAGEGEN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "IMAGEGEN_MODEL": args.model,
        "IMAGEGEN_LOG_LEVEL": "WARNING",
        "IMAGEGEN_METRICS_PORT": str(metrics_port),
        "IMAGEGEN_CACHE_DIR": os.environ.get("IMAGEGEN_CACHE_DIR", str(work / "cache")),
        "IMAGEGEN_RESULT_TTL_SECONDS": "60",
    }
    processes = [subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", ""], stdout=subprocess.DEVNULL)]
    try:
        time.sleep(0.3)
        api = subprocess.Popen(
            [sys.executable, "-m", "launcher.main", "api", "--port", str(api_port)], env=env, stderr=subprocess.DEVNULL
        )
        worker = subprocess.Popen([sys.executable, "-m", "launcher.main", "worker"], env=env, stderr=subprocess.DEVNULL)
        processes += [api, worker]
        url = f"http://127.0.0.1:{api_port}"
        wait_for(f"{url}/readyz")
        wait_for(f"http://127.0.0.1:{metrics_port}/readyz")
        samples = []
        warm_up = max(1, args.jobs // 10)
        with httpx.Client(base_url=url, timeout=60) as client:
            for index in range(args.jobs):
                job = client.post("/generate", json={**BODY, "seed": index}).json()
                while client.get(f"/jobs/{job['id']}").json()["status"] in ("queued", "running"):
                    time.sleep(0.005)
                if index + 1 == warm_up or (index + 1) % max(1, args.jobs // 5) == 0:
                    samples.append(
                        {
                            "jobs": index + 1,
                            "worker_rss_mib": rss_mib(worker.pid),
                            "api_rss_mib": rss_mib(api.pid),
                            "gpu_reserved_mib": gpu_mib(f"http://127.0.0.1:{metrics_port}/metrics"),
                        }
                    )
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

    first, last = samples[0], samples[-1]
    print(f"{'jobs':>6}{'worker RSS MiB':>16}{'API RSS MiB':>14}{'GPU reserved MiB':>18}")
    for sample in samples:
        gpu = f"{sample['gpu_reserved_mib']:.0f}" if sample["gpu_reserved_mib"] is not None else "n/a"
        print(f"{sample['jobs']:>6}{sample['worker_rss_mib']:>16.1f}{sample['api_rss_mib']:>14.1f}{gpu:>18}")
    growth = last["worker_rss_mib"] - first["worker_rss_mib"]
    ok = growth < 50
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} worker RSS grew {growth:.1f} MiB from job {first['jobs']} to "
        f"{last['jobs']} (flat: under 50 MiB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "worker_growth_mib": growth, "flat": ok}, indent=2))


if __name__ == "__main__":
    main()
