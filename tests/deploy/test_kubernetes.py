"""Offline checks of the Kubernetes manifests under deploy/k8s: the kustomizations, settings and Secret,
pod security, the API, worker and Redis workloads, network policies, overlays, kustomize builds and the Kubernetes
schemas (strict)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import (
    BASE,
    JOB_TIMEOUT_DEFAULT,
    K8S,
    K8S_VERSIONS,
    OVERLAYS,
    _exec_form,
    _final_stage,
    _flag_pairs,
    _one,
)
from tests.deploy.k8s_objects import (
    _base_objects,
    _built,
    _config,
    _container,
    _find,
    _kustomization,
    _manifest_sets,
    _pod_templates,
    _selects,
    needs_kustomize,
)


def test_kustomizations_reference_files_that_exist() -> None:
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        directory = kustomization.parent
        spec = yaml.safe_load(kustomization.read_text())
        assert (spec["apiVersion"], spec["kind"]) in {
            ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
            ("kustomize.config.k8s.io/v1alpha1", "Component"),  # deploy/k8s/components/
        }
        for resource in spec.get("resources", []):
            target = (directory / resource).resolve()
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{kustomization}: {resource}"
        for component in spec.get("components", []):
            target = (directory / component / "kustomization.yaml").resolve()
            assert yaml.safe_load(target.read_text())["kind"] == "Component", f"{kustomization}: {component}"
        for generator in spec.get("configMapGenerator", []):
            for file in generator.get("files", []):
                assert (directory / file.split("=")[-1]).is_file(), f"{kustomization}: {file}"
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
    from launcher.main import build_parser

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
