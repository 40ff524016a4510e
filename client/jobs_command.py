"""`imagegen jobs`: this API key's jobs, newest first (`GET /jobs`), one line each: id, status, model, created, prompt.

Exit status: 0 with the page printed (a next page's cursor on stderr); 1 when the API refused or cannot be reached (one
`error: ...` line on stderr).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from core.schemas import Job, JobStatus

PROMPT_WIDTH = 48


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `imagegen jobs`."""
    states = [status.value for status in JobStatus]
    parser.add_argument("--status", action="append", choices=states, help="only jobs in this state; repeatable")
    parser.add_argument("--model", help="only this model's jobs")
    parser.add_argument("--limit", type=int, default=20, help="jobs to list, 1 to 100 (default 20)")
    parser.add_argument("--cursor", help="the next page: the cursor the previous listing printed")
    parser.add_argument("--json", action="store_true", help="print the page as the API's JSON")
    parser.add_argument("--url", default=os.environ.get("IMAGEGEN_URL", "http://127.0.0.1:8000"))
    parser.add_argument(
        "--api-key",
        default=os.environ.get("IMAGEGEN_API_KEY"),
        help="sent as Authorization: Bearer (default: $IMAGEGEN_API_KEY)",
    )


def job_line(job: Job) -> str:
    """One job as the listing prints it."""
    prompt = " ".join(job.request.prompt.split())
    if len(prompt) > PROMPT_WIDTH:
        prompt = prompt[: PROMPT_WIDTH - 1] + "…"
    created = job.timings.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{job.id}  {job.status.value:<9}  {job.model}  {created}  {prompt}"


def _error(message: str) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr, flush=True)
    return 1


def run_jobs(args: argparse.Namespace) -> int:
    """The `jobs` command: 0 with the page printed, 1 on an error."""
    import httpx  # here, not at the top: `imagegen api` and `worker` start without the client's imports

    from client.client import ImagegenClient, ImagegenError

    try:
        client = ImagegenClient(args.url, api_key=args.api_key or None)
    except (httpx.InvalidURL, ValueError) as exc:
        return _error(f"invalid_request: --url {args.url!r}: {exc}")
    with client:
        try:
            statuses = [JobStatus(value) for value in args.status or []]
            page = client.list_jobs(status=statuses, model=args.model, limit=args.limit, cursor=args.cursor)
        except ImagegenError as exc:
            return _error(f"{exc.code}: {exc.message}")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _error(f"unavailable: cannot reach the API at {args.url}: {exc}")
    if args.json:
        print(page.model_dump_json(indent=2))
        return 0
    for job in page.jobs:
        print(job_line(job))
    if page.next_cursor:
        print(f"more: {next_page_command(args, page.next_cursor)}", file=sys.stderr, flush=True)
    return 0


def next_page_command(args: argparse.Namespace, cursor: str) -> str:
    """The command that lists the next page: the same filters, and the cursor."""
    words = ["imagegen", "jobs", *(word for status in args.status or [] for word in ("--status", status))]
    if args.model:
        words += ["--model", args.model]
    return shlex.join([*words, "--limit", str(args.limit), "--cursor", cursor])
