"""The OpenAI-compatible images endpoint through the official `openai` client, against the real processes."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

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


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _picture() -> Image.Image:
    """Blue with a red disc, 64x64."""
    image = Image.new("RGB", (64, 64), (30, 60, 220))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    return image


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)


def test_edit_without_mask_is_img2img_at_the_input_size(stack: Stack) -> None:
    result = _client(stack).images.edit(image=("in.png", _png(_picture()), "image/png"), prompt="a green square")
    assert len(result.data) == 1 and result.size == "64x64"
    data = base64.b64decode(result.data[0].b64_json)
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    assert "Denoising strength: 0.6" in read_parameters(data)  # the edit's default strength


def test_edit_with_mask_repaints_only_the_transparent_pixels(stack: Stack) -> None:
    source = _picture()
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=(0, 0, 0, 0))  # left half transparent: edit there
    result = _client(stack).images.edit(
        image=[("in.png", _png(source), "image/png")],  # a list of one: sent as image[]
        mask=("mask.png", _png(mask), "image/png"),
        prompt="a yellow triangle",
        size="64x64",
    )
    edited, given = _pixels(result.data[0].b64_json), np.asarray(source).astype(int)
    assert np.abs(edited[:, 32:] - given[:, 32:]).max() <= 1  # opaque in the mask: kept as sent
    assert np.abs(edited[:, :32] - given[:, :32]).mean() > 20  # transparent: repainted


def test_edit_errors_name_the_openai_parameter(stack: Stack) -> None:
    client, image = _client(stack), ("in.png", _png(_picture()), "image/png")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.images.edit(image=[image, image], prompt="x")
    assert (info.value.param, info.value.type) == ("image", "invalid_request_error")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.images.edit(image=image, mask=("m.png", _png(Image.new("RGB", (64, 64))), "image/png"), prompt="x")
    assert info.value.param == "mask" and "alpha" in info.value.message
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.images.edit(image=image, prompt="x", size="64x100")
    assert info.value.param == "size"


def test_models_list_and_retrieve(stack: Stack) -> None:
    client = _client(stack)
    models = {model.id: model for model in client.models.list()}
    assert "tiny" in models and models["tiny"].object == "model" and models["tiny"].owned_by == "imagegen"
    assert models["tiny"].created > 0  # a live worker serves it: when it started
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.param == "model"


def test_streamed_generation_sends_partial_images_then_the_image(stack: Stack) -> None:
    events = list(_client(stack).images.generate(prompt="a red circle", size="64x72", stream=True, partial_images=2))
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    for event in events:
        image = Image.open(io.BytesIO(base64.b64decode(event.b64_json)))
        assert (image.format, image.size, event.size, event.output_format) == ("PNG", (64, 72), "64x72", "png")
    assert "a red circle" in read_parameters(base64.b64decode(events[-1].b64_json))


def test_streamed_edit_and_a_failing_job_end_in_an_error_event(stack: Stack) -> None:
    client = _client(stack)
    events = list(
        client.images.edit(
            image=("in.png", _png(_picture()), "image/png"),
            prompt="a green square",
            stream=True,
            partial_images=1,
            output_format="webp",
        )
    )
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json))).format == "WEBP"
    # The worker's pixel limit (96x96) is below the API's: the job fails in the worker, after the stream began.
    with pytest.raises(openai.APIError) as info:
        list(client.images.generate(prompt="a red circle", size="128x128", stream=True))
    assert "pixels" in info.value.message
