"""The OpenAI-compatible images endpoint through the official `openai` client, against the real processes."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from tests.e2e.processes import Stack
from worker.encoding import read_parameters

openai = pytest.importorskip("openai")


def _client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused-when-auth-is-off", max_retries=0, timeout=120)


def test_b64_json_round_trip(stack: Stack) -> None:
    result = _client(stack).images.generate(prompt="a red circle", n=2, size="64x64", response_format="b64_json")
    assert len(result.data) == 2
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json))) for item in result.data]
    assert all(image.size == (64, 64) and image.format == "PNG" for image in images)
    assert "a red circle" in read_parameters(base64.b64decode(result.data[0].b64_json))


def test_url_response_and_output_format(stack: Stack) -> None:
    result = _client(stack).images.generate(
        prompt="a blue square", size="64x72", response_format="url", extra_body={"output_format": "webp"}
    )
    image = Image.open(io.BytesIO(httpx.get(result.data[0].url).content))
    assert image.format == "WEBP" and image.size == (64, 72)


def test_bad_size_is_a_client_error(stack: Stack) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        _client(stack).images.generate(prompt="x", size="100x100")
    assert "multiple of 8" in str(info.value)
