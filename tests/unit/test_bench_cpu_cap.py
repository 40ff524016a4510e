"""`bench/cpu_cap.py` holds a process to its share of a core (what lets `bench/fleet.py --redis-cpu` saturate Redis at
a fleet size a small machine can simulate)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.cpu_cap import CpuCapUnavailableError, cpu_capped
from bench.service_overhead import cpu_seconds


def test_a_busy_process_gets_its_cap_and_no_more() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        try:
            with cpu_capped(spinner.pid, 0.2) as described:
                assert "20% of a core" in described
                time.sleep(0.3)  # into the cgroup; past the first period
                before, started = cpu_seconds(spinner.pid), time.monotonic()
                time.sleep(2.0)
                capped = (cpu_seconds(spinner.pid) - before) / (time.monotonic() - started)
        except CpuCapUnavailableError as exc:
            pytest.skip(f"no writable cgroup here: {exc}")
        # Out of the cgroup again: the spinner may take a whole core (it gets well over the cap on 2 shared cores).
        before, started = cpu_seconds(spinner.pid), time.monotonic()
        time.sleep(1.0)
        free = (cpu_seconds(spinner.pid) - before) / (time.monotonic() - started)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.1 <= capped <= 0.27, capped
    assert free > 1.5 * capped, (free, capped)
