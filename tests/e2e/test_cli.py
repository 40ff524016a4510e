"""`imagegen generate` against real `imagegen api` and `imagegen worker` processes (tiny model, API keys on)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from service.auth import hash_key
from tests.e2e.conftest import stack_env, started_stack
from tests.e2e.processes import IMAGEGEN, Stack

KEY = "sk-cli-test"
SMALL = ["--width", "64", "--height", "64", "--steps", "8"]
# About 0.12 s a step on a 2-core CPU: long enough to interrupt mid-run.
LONG = ["--width", "512", "--height", "512", "--steps", "150", "--sampler", "euler"]
WORKER_MAX_PIXELS = 512 * 512  # below the API's limit: a 520x512 job is accepted, then fails in the worker


@pytest.fixture(scope="module")
def stack(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**stack_env(cache_dir), "IMAGEGEN_API_KEY_HASHES": json.dumps([hash_key(KEY)])}
    with started_stack(
        tmp_path_factory.mktemp("cli"), env, {"IMAGEGEN_MAX_PIXELS": str(WORKER_MAX_PIXELS)}, api_key=KEY
    ) as running:
        yield running


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "IMAGEGEN_API_KEY": KEY, **extra}


def _generate(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*IMAGEGEN, "generate", *args, "--url", stack.url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env or _env())


def _job_id(stderr: str) -> str:
    match = re.search(r"job ([0-9a-f]{32}) queued", stderr)
    assert match, stderr
    return match.group(1)


def test_progress_lines_files_and_seed(stack: Stack, tmp_path: Path) -> None:
    output = tmp_path / "cat.webp"
    result = _generate(stack, "a cat", "-o", str(output), *SMALL, "--seed", "77", "-n", "2", "--preview", "4")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^queued", result.stderr, re.M), result.stderr
    assert re.search(r"^started on \S+: 8 steps$", result.stderr, re.M), result.stderr
    assert "step 8/8 (100%)" in result.stderr
    assert result.stdout.splitlines()[:2] == [str(output), str(tmp_path / "cat-1.webp")]
    assert "seed 77 (succeeded in " in result.stdout and "seeds 77..78" in result.stdout
    for path in (output, tmp_path / "cat-1.webp"):
        image = Image.open(path)
        assert (image.format, image.size) == ("WEBP", (64, 64))
    assert Image.open(tmp_path / "cat.preview.webp").size == (2 * 64 // 8, 64 // 8)
    job = stack.client.get(f"/jobs/{_job_id(result.stderr)}").json()
    assert (job["status"], job["seed"], job["request"]["output_format"]) == ("succeeded", 77, "webp")


def test_progress_bar_on_a_terminal(stack: Stack, tmp_path: Path) -> None:
    """With stderr on a terminal the progress is a live bar (rich): step k/n, percent, and the outcome."""
    master, slave = pty.openpty()
    command = [*IMAGEGEN, "generate", "a dog", "-o", str(tmp_path / "dog.png"), *SMALL, "--url", stack.url]
    env = _env(TERM="xterm-256color", COLUMNS="100")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=env) as process:
        os.close(slave)
        screen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no terminal output for 60s: {screen!r}"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            screen += chunk
        stdout = process.stdout.read().decode() if process.stdout else ""
        assert process.wait(timeout=60) == 0, screen
    os.close(master)
    text = screen.decode(errors="replace")
    assert "━" in text  # the bar
    assert "8/8 100%" in text
    assert "succeeded in " in text
    assert "seed " in stdout and (tmp_path / "dog.png").exists()


def test_job_failing_in_the_worker_exits_1_with_its_error(stack: Stack, tmp_path: Path) -> None:
    output = tmp_path / "big.png"
    result = _generate(stack, "too big for the worker", "-o", str(output), "--width", "520", "--height", "512")
    assert result.returncode == 1, result
    assert re.search(rf"^error: invalid_request: .*{WORKER_MAX_PIXELS}", result.stderr, re.M), result.stderr
    assert not output.exists()
    assert result.stdout == ""
    assert stack.wait_job(_job_id(result.stderr))["status"] == "failed"


def test_refused_submission_exits_1_with_the_apis_error(stack: Stack, tmp_path: Path) -> None:
    over_limit = _generate(stack, "x", "-o", str(tmp_path / "x.png"), "--width", "2048", "--height", "2048")
    assert over_limit.returncode == 1
    assert over_limit.stderr.startswith("error: invalid_request: width*height: 2048x2048 = 4194304 pixels")

    unknown_sampler = _generate(stack, "x", "--sampler", "warp-drive")
    assert unknown_sampler.returncode == 1
    assert unknown_sampler.stderr.startswith("error: invalid_request: sampler: ")

    without_key = _generate(stack, "x", *SMALL, env={k: v for k, v in _env().items() if k != "IMAGEGEN_API_KEY"})
    assert without_key.returncode == 1
    assert without_key.stderr.startswith("error: unauthorized: an API key is required")

    wrong_key = _generate(stack, "x", *SMALL, "--api-key", "sk-wrong")
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.startswith("error: unauthorized: the API key is not valid")


def test_ctrl_c_cancels_the_job_and_exits_130(stack: Stack, tmp_path: Path) -> None:
    command = [*IMAGEGEN, "generate", "a long job", "-o", str(tmp_path / "long.png"), *LONG, "--url", stack.url]
    # Ctrl-C's default action even when the test runs as a background job (whose SIGINT the shell ignores, and a
    # child inherits that).
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(), preexec_fn=default_sigint
    ) as process:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # wait until the job runs
            seen.append(line)
            if line.startswith("step "):
                break
        job_id = _job_id("".join(seen))
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, "".join(seen)
        rest = process.stderr.read()
    assert f"interrupted: canceling job {job_id}" in rest
    job = stack.wait_job(job_id, timeout=60)
    assert job["status"] == "canceled", job
    assert 0 < job["progress"]["step"] < 150
    assert not (tmp_path / "long.png").exists()


def test_queue_position_while_another_job_runs(stack: Stack, tmp_path: Path) -> None:
    blocker = stack.submit(prompt="blocker", width=512, height=512, steps=150, sampler="euler")
    output = tmp_path / "waits.png"
    command = [*IMAGEGEN, "generate", "waits its turn", "-o", str(output), *SMALL, "--url", stack.url]
    try:
        with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()) as cli:
            assert cli.stderr is not None
            seen = []
            for line in cli.stderr:
                seen.append(line)
                if line.startswith("queued, next in line"):
                    break
            else:
                pytest.fail(f"no queue position shown: {''.join(seen)}")
            stack.client.delete(f"/jobs/{blocker['id']}")  # let it through
            assert cli.wait(timeout=60) == 0, "".join(seen) + cli.stderr.read()
        assert output.exists()
    finally:
        stack.client.delete(f"/jobs/{blocker['id']}")


def test_img2img_and_inpainting_from_files(stack: Stack, tmp_path: Path) -> None:
    from worker.encoding import read_parameters

    source, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.new("RGB", (72, 64), (200, 30, 30)).save(source)
    Image.new("L", (72, 64), 255).save(mask)
    out = tmp_path / "i2i.png"
    result = _generate(
        stack, "a blue square", "--init-image", str(source), "--strength", "0.5", "--steps", "4", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (72, 64)  # the input's size
    assert "Denoising strength: 0.5" in read_parameters(out.read_bytes())
    painted = tmp_path / "inpaint.png"
    args = ["--image", str(source), "--mask-image", str(mask), "--steps", "2", "-o", str(painted)]
    result = _generate(stack, "a blue square", *args)
    assert result.returncode == 0, result.stderr
    assert Image.open(painted).size == (72, 64)
