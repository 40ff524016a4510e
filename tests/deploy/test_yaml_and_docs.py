"""Every deployment YAML file parses and passes yamllint; the deploy doc says what was validated."""

from __future__ import annotations

import pytest

from tests.deploy.deploy_files import COMPOSE_FILE, GRAFANA, K8S, ROOT, _docs, _run, _tool, _yaml_files


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    assert COMPOSE_FILE in files and len(files) >= 15, files
    for path in files:
        assert _docs(path), f"{path} holds no YAML document"


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
