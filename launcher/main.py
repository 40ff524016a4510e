"""The `imagegen` command: `api`, `worker`, `dev` (both, with Redis if needed) and `generate` (a client)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading

from client.generate_options import add_generate_arguments
from core.settings import Settings


def _run_api(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from core.logs import configure_logging
    from service.app import create_app

    configure_logging(settings.log_level, "api")
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, log_level=settings.log_level.lower())


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `imagegen` command."""
    parser = argparse.ArgumentParser(prog="imagegen", description=__doc__)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `imagegen` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    settings = Settings()
    if args.command == "api":
        _run_api(settings, args.host, args.port)
    elif args.command == "worker":
        _run_worker(settings)
    elif args.command == "dev":
        return _dev(settings, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
