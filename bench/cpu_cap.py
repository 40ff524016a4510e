"""A CPU cap for one process, by a Linux cgroup of its own: how `bench/fleet.py --redis-cpu` makes Redis saturate at
a fleet size this machine can simulate.

A 2-core machine cannot run enough simulated workers to fill one Redis core (the workers' Python costs more CPU per
job than Redis does), so the sweep stops with the host saturated and Redis at a fifth of a core. Capped at a fraction
`f` of a core, Redis saturates at `f` times the jobs/s it would carry with a whole core, a rate the host can reach:
the sweep then shows where it saturates (jobs/s stop following the offered rate, the claim wait climbs) and checks
the capacity model's prediction (`f` / Redis CPU per job) against it. The cap is a CFS bandwidth limit (cgroup v2
`cpu.max`, or v1 `cpu.cfs_quota_us`): Redis may run `f` x the period in every period, so a command can wait up to a
period once the quota is spent, which adds latency but not CPU.

Needs a writable cgroup file system (root in a container that mounts it read-write, or a delegated cgroup).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The shortest period whose quota stays at or above the kernel's 1 ms minimum for the fractions used (>= 0.05).
MIN_QUOTA_US = 1000
MAX_PERIOD_US = 100_000


class CpuCapUnavailableError(RuntimeError):
    """No cgroup this process may create and write (no root, or a read-only cgroup mount)."""


def _period_us(fraction: float) -> int:
    """A period short enough to keep the stalls short, long enough that the quota is at least 1 ms."""
    return min(MAX_PERIOD_US, max(10_000, round(MIN_QUOTA_US / fraction)))


def _cgroup_dir() -> tuple[Path, str]:
    """Where to make the cgroup, and which interface it speaks: `v2` (unified, `cpu.max`) or `v1` (`cpu` controller)."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return CGROUP_ROOT, "v2"
    if (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists():
        return CGROUP_ROOT / "cpu", "v1"
    raise CpuCapUnavailableError("no cgroup cpu controller under /sys/fs/cgroup")


@contextlib.contextmanager
def cpu_capped(pid: int, fraction: float) -> Iterator[str]:
    """Cap process `pid` at `fraction` of one core while the block runs; yields a description of the cap."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a CPU cap is a fraction of one core in (0, 1], not {fraction}")
    parent, version = _cgroup_dir()
    group = parent / f"imagegen-bench-{os.getpid()}-{pid}"
    period = _period_us(fraction)
    quota = round(period * fraction)
    try:
        group.mkdir()
        if version == "v2":
            (group / "cpu.max").write_text(f"{quota} {period}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise CpuCapUnavailableError(f"cannot make the cgroup {group}: {exc}") from exc
    try:
        yield f"{fraction:.0%} of a core ({quota} us every {period} us, cgroup {version})"
    finally:
        # Back to the parent (if the process still runs), then the group can go.
        with contextlib.suppress(OSError):
            (parent / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()
