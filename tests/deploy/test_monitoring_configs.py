"""The Prometheus configs (Compose and Kubernetes), alert rules, Grafana datasource and dashboard: they use only
metrics the code exports, find the services they scrape, and promtool agrees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import GRAFANA, K8S, _compose, _docs, _run
from tests.deploy.k8s_objects import _base_objects, _container, _find, _selects
from tests.metrics_catalog import ALL, exported_series_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERIES = {series for name, (kind, _) in ALL.items() for series in exported_series_names(name, kind)}
METRIC = re.compile(r"\bimagegen_[a-z_]+\b")


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "imagegen-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_metric_exists(source: str) -> None:
    exprs = _dashboard_exprs() if source == "dashboard" else _alert_exprs()
    assert exprs
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used, "queries name imagegen metrics"
    assert used <= SERIES, used - SERIES


def test_dashboard_covers_the_operator_questions() -> None:
    text = " ".join(_dashboard_exprs())
    for needed in (
        "imagegen_queue_depth",
        "imagegen_jobs_total",
        "imagegen_images_generated_total",
        "imagegen_denoise_step_seconds_bucket",
        "imagegen_job_phase_seconds_bucket",
        "imagegen_gpu_memory_allocated_bytes",
        "imagegen_workers",
    ):
        assert needed in text, needed


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs it)")
def test_promtool_accepts_config_and_rules() -> None:
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


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
