"""A stack (real `imagegen api` and `imagegen worker`, tiny model) configured with `IMAGEGEN_RESULT_STORE=s3://...`
against moto's S3 server on loopback: images are served from the bucket through presigned URLs, to plain HTTP, the
project's client and the OpenAI client, and input images go through the bucket too."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from client.client import ImagegenClient
from core.schemas import Job
from tests.e2e.conftest import stack_env, started_stack
from tests.s3_server import AWS_ENV, S3Server


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


@pytest.mark.slow
def test_stack_serves_images_from_the_bucket_through_presigned_urls(
    cache_dir: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = s3_server.new_bucket()
    env = {
        **stack_env(cache_dir),
        **AWS_ENV,
        "IMAGEGEN_RESULT_STORE": f"s3://{bucket}/e2e",
        "IMAGEGEN_S3_ENDPOINT_URL": s3_server.endpoint_url,
    }
    with started_stack(tmp_path, env) as stack:
        job = stack.submit(prompt="a red circle", width=64, height=64, steps=2)
        done = stack.wait_job(job["id"])
        assert done["status"] == "succeeded", done
        url = done["images"][0]
        assert url.startswith(f"{s3_server.endpoint_url}/{bucket}/e2e/jobs/{job['id']}/a1/0.png?X-Amz-")
        assert _png(httpx.get(url).content).size == (64, 64)
        # The project's client follows the presigned URL (without its API key) and gets the same bytes.
        with ImagegenClient(stack.url) as client:
            assert client.images(Job.model_validate(done)) == [httpx.get(url).content]

        # img2img: the input goes to the bucket, and the worker reads it from there.
        picture = io.BytesIO()
        Image.new("RGB", (64, 64), (30, 60, 220)).save(picture, format="PNG")
        init = base64.b64encode(picture.getvalue()).decode()
        job = stack.submit(prompt="a green square", init_image=init, strength=0.5, steps=4)
        assert s3_server.keys(bucket, f"e2e/jobs/{job['id']}/inputs/") == [f"e2e/jobs/{job['id']}/inputs/init_image"]
        done = stack.wait_job(job["id"])
        assert done["status"] == "succeeded", done
        assert _png(httpx.get(done["images"][0]).content).size == (64, 64)

        # The OpenAI route's `url` answer is a presigned URL as well.
        result = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0).images.generate(
            prompt="a blue square", size="64x64", response_format="url"
        )
        assert result.data[0].url is not None and result.data[0].url.startswith(s3_server.endpoint_url)
        assert _png(httpx.get(result.data[0].url).content).size == (64, 64)
