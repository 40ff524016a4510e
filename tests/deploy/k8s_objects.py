"""The Kubernetes objects of deploy/k8s for the tests: the base's files read as they are, kustomize builds when
kustomize is installed, and label-selector matching."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import BASE, OVERLAYS, _docs, _run, _tool


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


def _manifest_sets() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Built kustomizations when kustomize is here, else the base's raw files."""
    if _kustomize_command() is None:
        yield "base (raw files)", _base_objects()
        return
    yield "base", _built(BASE)
    for name, directory in OVERLAYS.items():
        yield name, _built(directory)
