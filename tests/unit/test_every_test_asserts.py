"""Every test checks something: each test function under tests/ holds an `assert`, or a `pytest.raises` /
`pytest.warns` / `pytest.fail` / Playwright `expect` call. A check left in a helper does not count, so that a test that
only calls helpers says in its own body what it expects."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
CHECKING_CALLS = {"raises", "warns", "fail", "deprecated_call", "expect"}


def _test_functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level `test*` functions and `test*` methods of `Test*` classes, as pytest collects them."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            yield node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) and member.name.startswith("test"):
                    yield member


def _checks_something(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in CHECKING_CALLS:
                return True
    return False


def assertion_free_tests(source: str) -> list[str]:
    """Names of the test functions in `source` that check nothing in their own body."""
    return [f.name for f in _test_functions(ast.parse(source)) if not _checks_something(f)]


def test_the_scan_flags_a_test_without_a_check() -> None:
    source = """
import pytest

def test_calls_only(x):
    x.run()

def test_asserts(x):
    assert x.run()

def test_raises(x):
    with pytest.raises(ValueError):
        x.run()

def helper_without_assert(x):
    x.run()

class TestGrouped:
    def test_method_calls_only(self, x):
        x.run()

    def test_method_fails(self, x):
        if not x.run():
            pytest.fail("did not run")
"""
    assert assertion_free_tests(source) == ["test_calls_only", "test_method_calls_only"]


def test_every_test_under_tests_checks_something() -> None:
    files = sorted(TESTS.rglob("test_*.py"))
    assert len(files) > 40, "the scan found the test files"
    unchecked = [
        f"{path.relative_to(TESTS.parent)}::{name}" for path in files for name in assertion_free_tests(path.read_text())
    ]
    assert unchecked == [], "tests that assert nothing: " + ", ".join(unchecked)
