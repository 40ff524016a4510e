"""The Prometheus config, alert rules and Grafana dashboard use only metrics the code exports, and promtool agrees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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
