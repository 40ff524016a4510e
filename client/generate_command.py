"""`imagegen generate`: submit a prompt, follow the job's event stream with a progress display, write the images.

Exit status: 0 with images written; 1 when the API refused the request or cannot be reached, the job ended without
images, the wait timed out, or a file could not be read or written (one `error: ...` line on stderr, never a
traceback); 130 after Ctrl-C, which cancels the job first.
"""

from __future__ import annotations

import argparse
import base64
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from client.client import ImagegenClient, ImagegenError, JobFailedError, StreamEvent
from client.generate_options import flag, request_option_fields
from client.progress_view import ProgressView, progress_view
from core.events import PreviewEvent, RequeuedEvent, StartedEvent, StepEvent
from core.schemas import IMAGE_FIELDS, Job, JobStatus

SUFFIX_FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
EXIT_INTERRUPTED = 130
_POLL_SECONDS = 1.0  # how often the queue position is refreshed while the job waits


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The `POST /generate` body from the command's options; the output file's suffix picks the format."""
    body: dict[str, Any] = {"prompt": args.prompt}
    for name in request_option_fields():
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    for name in IMAGE_FIELDS:  # file paths, sent as base64
        path = getattr(args, name, None)
        if path is not None:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise CommandError(f"{flag(name)}: cannot read {path}: {exc.strerror or exc}") from exc
            body[name] = base64.b64encode(data).decode()
    if getattr(args, "lora", None):
        body["loras"] = [_lora(text) for text in args.lora]
    body["output_format"] = SUFFIX_FORMATS.get(Path(args.output).suffix.lower().lstrip("."), "png")
    return body


class CommandError(Exception):
    """A problem with the command's own input or output (a file it cannot read or write, a bad option value)."""


def _lora(text: str) -> dict[str, Any]:
    """`name` or `name:scale` as a `loras` entry."""
    name, _, scale = text.partition(":")
    if not scale:
        return {"name": name}
    try:
        return {"name": name, "scale": float(scale)}
    except ValueError as exc:
        raise CommandError(f"--lora {text}: the scale must be a number") from exc


def output_paths(output: Path, count: int) -> list[Path]:
    """`out.png`, then `out-1.png`, `out-2.png`, ... for more images."""
    return [output if i == 0 else output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(count)]


def preview_path(output: Path) -> Path:
    """Where `--preview` keeps the latest preview: `out.preview.webp` beside `out.png`."""
    return output.with_name(f"{output.stem}.preview.webp")


def _error(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message holds
    print(f"error: {line}", file=sys.stderr, flush=True)
    return 1


def _field_of(error: Any) -> str:
    """The field a local validation error is about (a cross-field rule names it in its context)."""
    loc = [str(part) for part in error["loc"]]
    named = (error.get("ctx") or {}).get("field")
    return ".".join([*loc, named] if isinstance(named, str) else loc) or "request"


def _api_error(exc: ImagegenError) -> int:
    hint = f" (retry after {exc.retry_after:.0f}s)" if exc.retry_after else ""
    return _error(f"{exc.code}: {exc.message}{hint}")


def _pump(client: ImagegenClient, job_id: str, events: queue.Queue[StreamEvent | BaseException | None]) -> None:
    """Thread body: put each event of the job's stream on `events`, then None (or the exception that ended it)."""
    try:
        for event in client.stream(job_id):
            events.put(event)
        events.put(None)
    except BaseException as exc:  # handed to the main thread, which raises it
        events.put(exc)


def _show_queue(client: ImagegenClient, job_id: str, view: ProgressView) -> bool:
    """Refresh the queue position; False once the job no longer waits (a failed look: try again later)."""
    try:
        current = client.get(job_id)
    except (ImagegenError, httpx.HTTPError):
        return True
    if current.status is not JobStatus.QUEUED:
        return False
    view.queued(current.queue_position, current.start_eta_seconds)
    return True


def follow(client: ImagegenClient, job: Job, view: ProgressView, timeout: float, preview: Path | None) -> Job:
    """Show the job's progress from its event stream until it ends (polling the queue position while it waits)."""
    events: queue.Queue[StreamEvent | BaseException | None] = queue.Queue()
    threading.Thread(target=_pump, args=(client, job.id, events), daemon=True, name="imagegen-events").start()
    deadline = time.monotonic() + timeout
    waiting = True
    view.queued(job.queue_position, job.start_eta_seconds)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"job {job.id} did not end within {timeout:g}s; it goes on (GET /jobs/{job.id})")
        try:
            item = events.get(timeout=min(_POLL_SECONDS, remaining))
        except queue.Empty:
            if waiting:
                waiting = _show_queue(client, job.id, view)
            continue
        if isinstance(item, BaseException):
            raise item
        if item is None or item.terminal:
            return client.get(job.id)
        event = item.event
        if isinstance(event, StartedEvent):
            waiting = False
            view.started(event.total, event.worker_id)
        elif isinstance(event, StepEvent):
            waiting = False
            view.step(event.step, event.total, event.eta_seconds)
        elif isinstance(event, PreviewEvent) and preview is not None:
            preview.write_bytes(base64.b64decode(event.data))
        elif isinstance(event, RequeuedEvent):
            waiting = True
            view.note(f"requeued (attempt {event.attempt}): {event.reason}")


def _cancel(client: ImagegenClient, job_id: str) -> None:
    print(f"\ninterrupted: canceling job {job_id}", file=sys.stderr, flush=True)
    try:
        job = client.cancel(job_id)
        state = "canceled" if job.status is JobStatus.CANCELED else "stops at its next step"
        print(f"job {job_id} {state}", file=sys.stderr, flush=True)
    except ImagegenError as exc:
        print(f"job {job_id} not canceled: {exc.code}: {exc.message}", file=sys.stderr, flush=True)
    except httpx.HTTPError as exc:
        print(f"job {job_id} not canceled: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the answer
        print(f"job {job_id}: cancel not confirmed", file=sys.stderr, flush=True)


def write_images(client: ImagegenClient, job: Job, output: Path) -> list[Path]:
    """Fetch the job's images and write them to `output`, `output-1`, ..."""
    paths = output_paths(output, len(job.images))
    images = client.images(job)
    for path, data in zip(paths, images, strict=True):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror or exc} (job {job.id})") from exc
    return paths


def _summary(job: Job, seconds: float) -> str:
    seeds = "" if job.request.num_images == 1 else f", seeds {job.seed}..{job.seed + job.request.num_images - 1}"
    return f"seed {job.seed} ({job.status.value} in {seconds:.1f}s{seeds}, job {job.id})"


def run_generate(args: argparse.Namespace) -> int:
    """The `generate` command: 0 with images written, 1 on an error, 130 after Ctrl-C (the job canceled)."""
    try:
        client = ImagegenClient(args.url, api_key=args.api_key or None)
    except (httpx.InvalidURL, ValueError) as exc:
        return _error(f"invalid_request: --url {args.url!r}: {exc}")
    output = Path(args.output)
    started = time.monotonic()
    job: Job | None = None
    with client:
        try:
            job = client.submit(request_body(args))
            print(f"job {job.id} queued (model {job.model}, seed {job.seed})", file=sys.stderr, flush=True)
            view = progress_view()
            try:
                job = follow(client, job, view, args.timeout, preview_path(output) if args.preview_every else None)
            except BaseException:
                view.close()
                raise
            view.close(f"{job.status.value} in {time.monotonic() - started:.1f}s")
            if job.status is not JobStatus.SUCCEEDED:
                raise JobFailedError(job)
            paths = write_images(client, job, output)
        except KeyboardInterrupt:
            if job is not None and not job.status.is_terminal():
                _cancel(client, job.id)
            return EXIT_INTERRUPTED
        except CommandError as exc:
            return _error(str(exc))
        except ValidationError as exc:
            first = exc.errors()[0]
            return _error(f"invalid_request: {_field_of(first)}: {first['msg'].removeprefix('Value error, ')}")
        except ImagegenError as exc:
            return _api_error(exc)
        except TimeoutError as exc:
            return _error(f"timeout: {exc}")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _error(f"unavailable: cannot reach the API at {args.url}: {exc}")
        except OSError as exc:  # the preview file, say
            return _error(f"{exc.filename or 'file'}: {exc.strerror or exc}")
    for path in paths:
        print(path)
    print(_summary(job, time.monotonic() - started), flush=True)
    return 0
