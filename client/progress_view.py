"""How `imagegen generate` shows a job's progress: a live bar on a terminal (rich), plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn


def format_seconds(seconds: float | None) -> str:
    """`0.4s`, `12s`, `3m05s`; `?` when unknown."""
    if seconds is None or seconds < 0:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def queue_text(position: int | None, start_eta: float | None) -> str:
    """`queued, 2 jobs ahead, starts in ~3.0s`, or as much of it as is known."""
    parts = ["queued"]
    if position == 0:
        parts.append("next in line")
    elif position is not None:
        parts.append(f"{position} job{'s' if position != 1 else ''} ahead")
    if start_eta is not None:
        parts.append(f"starts in ~{format_seconds(start_eta)}")
    return ", ".join(parts)


class ProgressView(Protocol):
    """What the generate command tells its user while a job runs."""

    def queued(self, position: int | None, start_eta: float | None) -> None:
        """The job waits in the queue at `position` (jobs ahead of it)."""

    def started(self, total: int, worker_id: str) -> None:
        """A worker started the job: `total` denoising iterations."""

    def step(self, step: int, total: int, eta: float | None) -> None:
        """Step `step` of `total` is done; `eta` seconds to go."""

    def note(self, message: str) -> None:
        """Something worth a line of its own (a requeue, a cancel)."""

    def close(self, outcome: str = "") -> None:
        """The job is over (`outcome`: how it ended, when known): leave the display in its final state."""


class PlainView:
    """Lines on stderr, for logs and pipes: queue position changes, start, steps at most once a second, the last."""

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last_queue = ""
        self._last_step_at = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def queued(self, position: int | None, start_eta: float | None) -> None:
        """Print the queue position when it changed."""
        text = queue_text(position, None)
        if text != self._last_queue:
            self._last_queue = text
            self._print(queue_text(position, start_eta))

    def started(self, total: int, worker_id: str) -> None:
        """Print the start."""
        self._print(f"started on {worker_id}: {total} steps")

    def step(self, step: int, total: int, eta: float | None) -> None:
        """Print a step line, at most once per `interval` (and always the last one)."""
        now = time.monotonic()
        if step < total and now - self._last_step_at < self.interval:
            return
        self._last_step_at = now
        percent = 100 * step // total if total else 0
        self._print(f"step {step}/{total} ({percent}%), ETA {format_seconds(eta)}")

    def note(self, message: str) -> None:
        """Print the message."""
        self._print(message)

    def close(self, outcome: str = "") -> None:
        """Nothing to tidy up: the command prints the outcome itself."""


class RichView:
    """A live progress bar (rich) on the terminal's stderr: a spinner while queued, then step k/n, percent, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("[cyan]{task.fields[eta]}"),
            console=self.console,
        )
        self._task: TaskID = self._progress.add_task("queued", total=None, counts="", eta="")
        self._progress.start()

    def queued(self, position: int | None, start_eta: float | None) -> None:
        """Show the queue position (the bar pulses: no total yet)."""
        self._progress.update(self._task, description=queue_text(position, start_eta))

    def started(self, total: int, worker_id: str) -> None:
        """Switch the bar to steps."""
        self._progress.reset(self._task, total=total, description="generating", counts=f"0/{total}", eta="")

    def step(self, step: int, total: int, eta: float | None) -> None:
        """Advance the bar to `step`."""
        percent = 100 * step // total if total else 0
        self._progress.update(
            self._task,
            description="decoding" if step >= total else "generating",
            total=total,
            completed=step,
            counts=f"{step}/{total} {percent:3d}%",
            eta=f"ETA {format_seconds(eta)}" if step < total else "",
        )

    def note(self, message: str) -> None:
        """Print a line above the bar."""
        self._progress.console.print(message)

    def close(self, outcome: str = "") -> None:
        """Stop the live display, leaving its last frame (with `outcome` as its description)."""
        if outcome:
            self._progress.update(self._task, description=outcome, eta="")
        self._progress.stop()


def progress_view() -> ProgressView:
    """A live bar when stderr is a terminal, plain lines when it is not."""
    console = Console(stderr=True)
    return RichView(console) if console.is_terminal else PlainView()
