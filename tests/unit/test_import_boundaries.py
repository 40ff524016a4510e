"""The import graph DESIGN.md states, read from the source with `ast` (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "service", "client", "worker", "launcher")
# Which of the project's packages each package may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "service": {"core"},
    "client": {"core"},
    "worker": {"core"},
    "launcher": {"core", "service", "client", "worker"},
}
HEAVY = {"torch", "diffusers", "transformers"}
TORCH_FREE = ("core", "service")


def _imports(source: str, package: str) -> set[str]:
    """The top-level module names `source` imports anywhere in it (a relative import names its own package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").split(".")[0])
    return names


def _graph(package: str) -> dict[str, set[str]]:
    """Each .py file of `package` (relative to the repository) and the top-level names it imports."""
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    return {str(path.relative_to(ROOT)): _imports(path.read_text(), package) for path in files}


def test_imports_inside_functions_and_relative_ones_count() -> None:
    source = "import os\ndef f():\n    from worker.main import run_worker\n    import torch.nn\nfrom . import keys\n"
    assert _imports(source, "core") == {"os", "worker", "torch", "core"}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    forbidden = set(PACKAGES) - ALLOWED[package] - {package}
    wrong = {path: sorted(names & forbidden) for path, names in _graph(package).items() if names & forbidden}
    assert not wrong, f"{package}/ may import {sorted(ALLOWED[package]) or 'none'} of the project's packages: {wrong}"


@pytest.mark.parametrize("package", TORCH_FREE)
def test_core_and_service_never_import_torch(package: str) -> None:
    wrong = {path: sorted(names & HEAVY) for path, names in _graph(package).items() if names & HEAVY}
    assert not wrong, f"{package}/ must start without torch, diffusers or transformers: {wrong}"
