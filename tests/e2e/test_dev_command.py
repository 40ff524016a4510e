"""`imagegen dev`: with no Redis answering, it starts an embedded real redis-server, an API and a worker."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.processes import IMAGEGEN, Process, free_port, wait_until

pytestmark = pytest.mark.slow  # `imagegen dev` starts its own Redis, API and worker


def test_dev_starts_embedded_redis_and_serves_a_generation(cache_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "IMAGEGEN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "IMAGEGEN_CACHE_DIR": str(cache_dir),
        "IMAGEGEN_MODEL": "tiny",
        "IMAGEGEN_WARMUP_STEPS": "1",
        "IMAGEGEN_METRICS_PORT": str(free_port()),
    }
    dev = Process(["dev", "--port", str(port)], env, tmp_path / "dev.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: any(m["workers"] for m in httpx.get(f"{url}/models").json()), 120, "the dev stack")
        assert "started an embedded redis-server" in dev.log()
        output = tmp_path / "out.webp"
        result = subprocess.run(
            [
                *IMAGEGEN,
                "generate",
                "a blue square",
                "-o",
                str(output),
                "--url",
                url,
                "--steps",
                "2",
                "--width",
                "64",
                "--height",
                "64",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert re.search(r"seed \d+ \(succeeded", result.stdout)
        assert Image.open(output).format == "WEBP"
    finally:
        returncode = dev.stop()
    worker_pid = int(re.search(r"starting \(pid (\d+)\)", dev.log()).group(1))
    assert returncode == 0, dev.log()
    # The worker it started is gone with it.
    try:
        os.kill(worker_pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, dev.log()
