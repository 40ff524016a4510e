"""POST, poll and fetch through real `imagegen api` and `imagegen worker` processes with the tiny model."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from tests.e2e.processes import IMAGEGEN, Stack
from worker.encoding import read_parameters

SMALL = {"prompt": "a red circle on a blue background", "width": 64, "height": 64, "steps": 4}


def _pixels(stack: Stack, url: str) -> np.ndarray:
    response = stack.client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_post_poll_fetch_png_of_requested_size(stack: Stack) -> None:
    job = stack.submit(**{**SMALL, "width": 96, "height": 64})
    assert job["status"] == "queued"
    done = stack.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"step": 4, "total": 4, "fraction": 1.0}
    assert done["timings"]["created_at"] <= done["timings"]["started_at"] <= done["timings"]["finished_at"]
    assert done["worker_id"]
    image = Image.open(io.BytesIO(stack.client.get(done["images"][0]).content))
    assert image.format == "PNG"
    assert image.size == (96, 64)


def test_same_seed_same_pixels_other_seed_other_pixels(stack: Stack) -> None:
    jobs = [stack.submit(**SMALL, seed=seed) for seed in (11, 11, 12)]
    done = [stack.wait_job(job["id"]) for job in jobs]
    assert [job["seed"] for job in done] == [11, 11, 12]
    first, again, other = (_pixels(stack, job["images"][0]) for job in done)
    # The recorded request (with its seed) reproduces the image on the same machine.
    replay = stack.wait_job(stack.submit(**done[2]["request"])["id"])
    assert replay["provenance"]["model_hash"] == done[2]["provenance"]["model_hash"]
    assert np.array_equal(_pixels(stack, replay["images"][0]), other)
    parameters = read_parameters(stack.client.get(done[2]["images"][0]).content)
    assert parameters.startswith(SMALL["prompt"] + "\n")
    assert "Seed: 12, Size: 64x64, Model: tiny" in parameters
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_three_images_are_three_different_images(stack: Stack) -> None:
    done = stack.wait_job(stack.submit(**SMALL, num_images=3, seed=5)["id"])
    assert len(done["images"]) == 3
    images = [_pixels(stack, url) for url in done["images"]]
    assert all(image.shape == (64, 64, 3) for image in images)
    assert not np.array_equal(images[0], images[1])
    assert not np.array_equal(images[1], images[2])
    assert not np.array_equal(images[0], images[2])


def test_failed_job_reports_its_error_and_the_worker_goes_on(stack: Stack) -> None:
    # 128x128 passes the API's limit but not this worker's (IMAGEGEN_MAX_PIXELS=9216).
    failed = stack.wait_job(stack.submit(**{**SMALL, "width": 128, "height": 128})["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_request"
    assert "9216" in failed["error"]["message"]
    assert failed["images"] == []
    assert stack.client.get(f"/jobs/{failed['id']}/images/0").status_code == 404

    after = stack.wait_job(stack.submit(**SMALL)["id"])
    assert after["status"] == "succeeded"
    assert after["worker_id"] == failed["worker_id"]


def test_models_shows_the_worker_and_its_samplers(stack: Stack) -> None:
    models = stack.client.get("/models").json()
    assert [m["name"] for m in models] == ["tiny"]
    assert models[0]["workers"] == 1
    assert "euler_a" in models[0]["samplers"]
    assert "lcm" in models[0]["samplers"]
    assert models[0]["devices"] == ["cpu"]


def test_cli_generate_writes_files_and_prints_the_seed(stack: Stack, tmp_path: Path) -> None:
    output = tmp_path / "cat.png"
    result = subprocess.run(
        [
            *IMAGEGEN,
            "generate",
            "a cat",
            "-o",
            str(output),
            "--url",
            stack.url,
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "2",
            "--seed",
            "77",
            "-n",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "seed 77 " in result.stdout
    assert Image.open(output).size == (64, 64)
    assert Image.open(tmp_path / "cat-1.png").size == (64, 64)
