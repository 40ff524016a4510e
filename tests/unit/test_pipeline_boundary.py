"""The worker's diffusers code (`worker/pipeline/`) stays free of Redis, and the job runtime reaches it only through
its facade, `worker.pipeline.resident`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "worker"
PIPELINE_FILES = sorted((WORKER / "pipeline").glob("*.py"))
# The Redis side of the project: the client library, RQ and core's modules that speak to Redis.
REDIS_MODULES = ("redis", "rq", "core.jobs", "core.queueing", "core.workers", "core.recovery", "core.speed")
RUNTIME_FILES = ("engine.py", "main.py", "step_reporter.py")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_the_parser_sees_imports_at_any_depth(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from redis import Redis\n    import rq.job\n", encoding="utf-8")
    assert {"os", "redis", "redis.Redis", "rq.job"} <= imported_modules(sample)


def test_there_are_pipeline_files_to_check() -> None:
    assert {"resident.py", "families.py", "loading.py", "generation.py"} <= {path.name for path in PIPELINE_FILES}


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda path: path.name)
def test_pipeline_package_does_not_import_redis(path: Path) -> None:
    offending = sorted(module for module in imported_modules(path) if _within(module, REDIS_MODULES))
    assert offending == [], f"{path.name} imports {offending}"


@pytest.mark.parametrize("name", RUNTIME_FILES)
def test_runtime_uses_only_the_facade(name: str) -> None:
    modules = imported_modules(WORKER / name)
    assert not any(_within(module, ("diffusers",)) for module in modules)
    reached = [module for module in modules if _within(module, ("worker.pipeline",))]
    assert reached and all(_within(module, ("worker.pipeline.resident",)) for module in reached), reached
