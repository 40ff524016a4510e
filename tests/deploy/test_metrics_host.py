"""The worker's metrics port binds loopback unless configured; every container setup that Prometheus or a kubelet
probes from outside the container sets `IMAGEGEN_METRICS_HOST=0.0.0.0` explicitly."""

from __future__ import annotations

import re

from core.settings import Settings
from tests.deploy.deploy_files import _env, _final_stage, _service
from tests.deploy.k8s_objects import _base_objects, _config, _container, _find


def test_metrics_bind_loopback_by_default() -> None:
    assert Settings.model_fields["metrics_host"].default == "127.0.0.1"


def test_compose_workers_open_their_metrics_port_to_prometheus() -> None:
    for name in ("worker", "worker-cpu"):
        assert _env(_service(name))["IMAGEGEN_METRICS_HOST"] == "0.0.0.0", name


def test_worker_image_binds_its_metrics_on_every_interface() -> None:
    env = " ".join(ins.args for ins in _final_stage("worker") if ins.keyword == "ENV")
    assert re.search(r"(^|\s)IMAGEGEN_METRICS_HOST=0\.0\.0\.0(\s|$)", env), env


def test_kubernetes_worker_gets_the_metrics_host_from_its_configmap() -> None:
    objects = _base_objects()
    assert _config(objects)["IMAGEGEN_METRICS_HOST"] == "0.0.0.0"
    container = _container(_find(objects, "Deployment", "imagegen-worker"))
    assert {"configMapRef": {"name": "imagegen-config"}} in container["envFrom"]
    assert "IMAGEGEN_METRICS_HOST" not in {item["name"] for item in container.get("env", [])}  # not overridden
