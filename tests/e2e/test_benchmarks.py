"""The benchmarks run in CI on the CPU with the tiny model and short settings (their figures are not judged here:
timing goals live in the benchmarks' own verdict lines, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # benchmarks: each starts its own processes and runs many jobs

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, cache_dir: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "result.json"
    env = {"IMAGEGEN_CACHE_DIR": str(cache_dir), "IMAGEGEN_LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, **env},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text())


def test_service_overhead_benchmark(tmp_path: Path, cache_dir: Path) -> None:
    stdout, result = _run(tmp_path, cache_dir, "bench.service_overhead", "--quick", "--clients", "8")
    assert result["bare_rps"] > 0 and result["generate_rps"] > 0
    assert result["overhead_ms_1_client"]["p50"] <= result["overhead_ms_1_client"]["p99"]
    assert result["redis_commands_per_job"] > 0
    by_command = result["redis_commands_per_job_by_command"]
    assert by_command["blmove"] > 0 and "info" not in by_command  # the dequeue is counted, the bench's own reads not
    assert result["api_cpu_seconds_per_1000_polls"]["queued"] > 0 and result["bare_cpu_seconds_per_1000_gets"] > 0
    assert stdout.count("verdict: ") == 5


def test_polling_benchmark_quick(tmp_path: Path, cache_dir: Path) -> None:
    stdout, result = _run(tmp_path, cache_dir, "bench.polling", "--quick")
    assert result["waited_images_per_second"] > 0 and result["polled_images_per_second"] > 0
    assert stdout.count("verdict: ") == 1


def test_pipeline_benchmark_on_cpu(tmp_path: Path, cache_dir: Path) -> None:
    stdout, result = _run(
        tmp_path,
        cache_dir,
        "bench.pipeline",
        "--device",
        "cpu",
        "--model",
        "tiny",
        "--size",
        "64",
        "--steps",
        "2",
        "--batches",
        "1,2",
        "--repeats",
        "1",
    )
    assert [row["batch"] for row in result["rows"]] == [1, 2]
    assert result["baseline_seconds"] > 0 and result["speedup_batch_1"] > 0
    assert "verdict: n/a on cpu" in stdout


def test_family_pipeline_benchmark_on_cpu_and_the_real_configs_counted(tmp_path: Path, cache_dir: Path) -> None:
    stdout, result = _run(
        tmp_path, cache_dir, "bench.pipeline_families", "--device", "cpu", "--model", "tiny-flux", "--steps", "2",
        "--batches", "1,2", "--repeats", "1",
    )  # fmt: skip
    assert [row["batch"] for row in result["rows"]] == [1, 2]
    assert result["baseline_seconds"] > 0 and result["speedup_batch_1"] > 0
    assert "ratio: worker path at batch 1" in stdout
    # The real sizes are built on the meta device (no weights): their denoisers have the published parameter counts.
    for model, billions in (("sdxl", 2.57), ("flux-dev", 11.90)):
        _, counted = _run(tmp_path, cache_dir, "bench.pipeline_families", "--model", model, "--count-only")
        assert abs(counted["parameters"] / 1e9 - billions) < 0.01, counted
        assert counted["tflop"] > 1


@pytest.mark.parametrize("jobs", [30])
def test_memory_benchmark(tmp_path: Path, cache_dir: Path, jobs: int) -> None:
    _, result = _run(tmp_path, cache_dir, "bench.memory", "--jobs", str(jobs))
    assert result["samples"][-1]["jobs"] == jobs
    assert all(sample["worker_rss_mib"] > 0 for sample in result["samples"])


def test_fleet_benchmark_quick(tmp_path: Path, cache_dir: Path) -> None:
    stdout, result = _run(tmp_path, cache_dir, "bench.fleet", "--quick")
    [row] = result["rows"]
    # Every job the clients got a 202 for ran once and ended: the runtime of 20 threaded workers lost none.
    assert row["accepted"] > 0 and row["statuses"] == {"succeeded": row["accepted"]}
    assert row["lost"] == 0 and row["done_twice"] == 0
    assert row["jobs_per_second"] > 0 and row["redis_cpu_ms_per_job"] > 0 and row["redis_commands_per_job"] > 0
    assert stdout.count("verdict: ") == 3
