"""Fuzz: schemathesis drives the running API from its own /openapi.json, every operation included: no 5xx, no
request that times out, every response as documented, and every 4xx/5xx body in its route's error shape (OpenAI's on
`/v1/...`, the API's own elsewhere: tests/e2e/fuzz_checks.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import Stack

pytestmark = pytest.mark.slow  # schemathesis sends hundreds of requests to its own API and worker

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
CHECKS = Path(__file__).with_name("fuzz_checks.py")
OPENAI = "/v1/images/generations"
# The OpenAI endpoint answers when its images are done: its jobs must be quick. The models file makes a request that
# leaves the size out a 64x64, 1-step job, and the pixel limit allows no bigger size.
MODELS_TOML = '[models.tiny]\nsource = "tiny"\nwidth = 64\nheight = 64\nsteps = 1\n'
OPENAI_TIMEOUT_SECONDS = 20  # far above such a job on an idle worker; the fuzzer's own request timeout is above it
# The A1111 txt2img/img2img routes wait for their jobs too, but for as long as a job may live (A1111's defaults ask for
# 50 steps): left out here; their field rules are tested in process (tests/integration/test_a1111.py).
A1111_SYNC = "^/sdapi/v1/(txt2img|img2img)$"


@pytest.fixture
def stack(cache_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    models_file = tmp_path / "models.toml"
    models_file.write_text(MODELS_TOML)
    env = {
        **stack_env(cache_dir),
        "IMAGEGEN_LOG_LEVEL": "WARNING",
        "IMAGEGEN_MODELS_FILE": str(models_file),
        "IMAGEGEN_MAX_PIXELS": str(64 * 64),
        # Fuzzed jobs beyond two queued are refused (429, documented): an event stream the fuzzer opens on a job it
        # created ends within a few jobs' time, and the worker's backlog does not starve the API of CPU.
        "IMAGEGEN_MAX_QUEUE_DEPTH": "2",
        "IMAGEGEN_OPENAI_TIMEOUT_SECONDS": str(OPENAI_TIMEOUT_SECONDS),
    }
    with started_stack(tmp_path, env) as running:
        yield running


def _schemathesis(
    stack: Stack, *options: str, max_examples: int, request_timeout: float
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{stack.url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
            "documented_error_shape",
            "--max-examples",
            str(max_examples),
            "--workers",
            "1",
            "--request-timeout",
            str(request_timeout),
            "--seed",
            "1",
            "--no-color",
            "--phases",
            "examples,coverage,fuzzing",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(CHECKS)},
    )
    return result, time.monotonic() - started


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis not installed (dev extra)")
def test_every_endpoint_no_server_errors_and_documented_answers(stack: Stack) -> None:
    # The synchronous OpenAI endpoint first, on an idle worker: each accepted request waits for its own job only.
    # (Jobs the native endpoint accepts queue up behind each other; none of them is waited for.)
    # Each of its accepted requests runs a job: fewer examples keep the run's time near what it was without it.
    openai, openai_seconds = _schemathesis(
        stack, f"--include-path={OPENAI}", max_examples=10, request_timeout=OPENAI_TIMEOUT_SECONDS + 10
    )
    rest, rest_seconds = _schemathesis(
        stack, f"--exclude-path-regex=^{OPENAI}$|{A1111_SYNC}", max_examples=40, request_timeout=30
    )
    print(f"schemathesis: {OPENAI} {openai_seconds:.1f}s, every other endpoint {rest_seconds:.1f}s")
    for result in (openai, rest):
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "Selected: 0" not in result.stdout, result.stdout[-2000:]
    # What the API itself counted: the synchronous endpoint really answered with images, and nothing was a 5xx.
    answered = _answers(stack.client.get("/metrics").text)
    print("answers by route and status:", dict(sorted(answered.items())))
    assert answered.get(("POST", OPENAI, "200"), 0) >= 1, answered
    assert answered.get(("POST", "/generate", "202"), 0) >= 1, answered
    assert not [key for key in answered if key[2].startswith("5")], answered


def _answers(metrics: str) -> dict[tuple[str, str, str], int]:
    """`imagegen_http_requests_total` by (method, route, status), from the API's Prometheus text."""
    counts = {}
    for family in text_string_to_metric_families(metrics):
        if family.name == "imagegen_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    counts[(labels["method"], labels["route"], labels["status"])] = int(sample.value)
    return counts
