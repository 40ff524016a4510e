"""The `imagegen` command: `api`, `worker`, `dev` (both, with Redis if needed), and `generate` and `jobs` (clients)."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import threading
from typing import Any, NoReturn

from pydantic import ValidationError

from client.generate_options import add_generate_arguments
from client.jobs_command import add_jobs_arguments
from core.settings import Settings


def _run_api(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from core.logs import configure_logging
    from service.app import create_app
    from service.slow_clients import deadline_protocol

    configure_logging(settings.log_level, "api")
    app = create_app(settings)
    _keep_gc_pauses_short(app)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level=settings.log_level.lower(),
        # Header and body read deadlines for slow and hostile clients (uvicorn has none of its own).
        http=deadline_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,  # type: ignore[arg-type]  # a float works
    )


def _keep_gc_pauses_short(app: Any) -> None:
    """Keep the garbage collector's pauses off the API's tail latency. The startup objects (modules, routes, schemas,
    the OpenAPI document, built here) go to the permanent generation, so full collections stop walking them, and full
    collections run a tenth as often (young garbage is collected as before). Under bench/liveness.py's load, full
    collections over those objects paused the event loop 70-200 ms every few seconds: the whole p99 of `/healthz`."""
    app.openapi()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


def _run_worker(settings: Settings) -> None:
    from worker.main import run_worker  # imports torch: only the worker pays for it

    run_worker(settings)


def _dev(settings: Settings, host: str, port: int) -> int:
    """Supervise an API and a worker process (and an embedded Redis when needed) until SIGINT/SIGTERM."""
    from launcher.devredis import ensure_redis

    redis_url, embedded = ensure_redis(settings.redis_url, settings.cache_dir)
    if embedded is not None:
        print(
            f"imagegen dev: no Redis answered at {settings.redis_url}; started an embedded redis-server at {redis_url}"
        )
    else:
        print(f"imagegen dev: using Redis at {redis_url}")
    env = {**os.environ, "IMAGEGEN_REDIS_URL": redis_url, "IMAGEGEN_MODEL": settings.model}
    # The worker it starts is coming: requests sent while it loads wait in the queue instead of answering 503.
    env.setdefault("IMAGEGEN_QUEUE_WITHOUT_WORKERS", "true")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    children = [
        subprocess.Popen([sys.executable, "-m", "launcher.main", "worker"], env=env),
        subprocess.Popen([sys.executable, "-m", "launcher.main", "api", "--host", host, "--port", str(port)], env=env),
    ]
    print(
        f"imagegen dev: worker for model {settings.model!r} starting (pid {children[0].pid}); API on http://{host}:{port}"
    )
    sys.stdout.flush()
    while not stop.wait(0.5):
        if any(child.poll() is not None for child in children):
            print("imagegen dev: a process exited; stopping the others")
            break
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    if embedded is not None:
        embedded.shutdown()
    return 0 if stop.is_set() else 1


def _generate(args: argparse.Namespace) -> int:
    from client.generate_command import run_generate

    return run_generate(args)


def _jobs(args: argparse.Namespace) -> int:
    from client.jobs_command import run_jobs

    return run_jobs(args)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one `error: ...` line (exit 2) like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `imagegen` command."""
    parser = _Parser(prog="imagegen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    api = commands.add_parser("api", help="run the HTTP API")
    commands.add_parser("worker", help="run a worker serving IMAGEGEN_MODEL")
    dev = commands.add_parser("dev", help="run the API and one worker (and an embedded Redis when none answers)")
    for sub in (api, dev):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)

    gen = commands.add_parser(
        "generate", help="submit a prompt to a running API, show its progress, and write the images (Ctrl-C cancels)"
    )
    add_generate_arguments(gen)
    jobs = commands.add_parser("jobs", help="list this API key's jobs on a running API, newest first")
    add_jobs_arguments(jobs)
    return parser


def _fail(message: str) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `imagegen` console script; an error is one `error: ...` line on stderr, never a traceback
    (a server's own failures are in its logs)."""
    args = build_parser().parse_args(argv)
    if args.command in ("generate", "jobs"):
        try:
            return _generate(args) if args.command == "generate" else _jobs(args)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # a bug, said in one line: the command's own errors are handled where they happen
            return _fail(f"internal: {type(exc).__name__}: {exc}")
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"IMAGEGEN_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors() if e["loc"])
        return _fail(f"configuration: {problems or exc}")
    if args.command == "api":
        _run_api(settings, args.host, args.port)
    elif args.command == "worker":
        _run_worker(settings)
    elif args.command == "dev":
        try:
            return _dev(settings, args.host, args.port)
        except SystemExit as exc:  # no Redis and no embedded one: said as one error line
            if isinstance(exc.code, str):
                return _fail(exc.code)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
