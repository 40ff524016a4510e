"""Input images are checked at submission: bad ones get a 4xx naming the field and the limit, before Redis is used
and before a decompression bomb expands."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.settings import Settings
from service.app import create_app

GOOD = {"prompt": "a red circle", "steps": 4}


@pytest.fixture
def client() -> TestClient:
    # Nothing listens on port 1: a request that got past validation would fail with 503, not the 4xx asserted.
    settings = Settings(redis_url="redis://127.0.0.1:1/0", max_pixels=512 * 512, max_input_image_bytes=200_000)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _encoded(size=(64, 64), fmt="PNG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format=fmt)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _error(response, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("not base64 at all!", "not valid base64"),
        (_b64(b"plain text, no image"), "not an image"),
        (_b64(_encoded(fmt="GIF", mode="P")), "GIF images are not accepted"),
        (_b64(_encoded(fmt="PNG")[:60]), "truncated or corrupt"),
        ("data:image/png," + _b64(_encoded()), "must be base64"),
    ],
)
def test_bad_init_image_is_422_naming_the_field(client: TestClient, value: str, text: str) -> None:
    error = _error(client.post("/generate", json={**GOOD, "init_image": value}))
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("init_image: ")
    assert text in error["message"]


def test_image_over_the_pixel_limit_is_refused_before_decoding(client: TestClient) -> None:
    # 4000x4000 one-bit pixels compress to a few kB but would decode to 16 M pixels (48 MB as RGB).
    bomb = _encoded(size=(4000, 4000), mode="1")
    assert len(bomb) < 50_000
    error = _error(client.post("/generate", json={**GOOD, "init_image": _b64(bomb)}))
    assert "4000x4000 = 16000000 pixels is over the limit of 262144 pixels" in error["message"]


def test_a_huge_declared_size_is_refused_as_over_the_pixel_limit(client: TestClient) -> None:
    bomb = _encoded(size=(20000, 20000), mode="1")  # 400 M pixels in about 50 kB: past Pillow's own guard too
    error = _error(client.post("/generate", json={**GOOD, "init_image": _b64(bomb)}))
    assert error["message"].startswith("init_image: over the limit of 262144 pixels")


def test_image_over_the_byte_limit_is_refused(client: TestClient) -> None:
    noisy = Image.frombytes("RGB", (400, 400), bytes(range(256)) * 1875)
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG", compress_level=0)
    error = _error(client.post("/generate", json={**GOOD, "init_image": _b64(buffer.getvalue())}))
    assert "over the limit of 200000 bytes" in error["message"]


def test_mask_of_another_size_is_422(client: TestClient) -> None:
    body = {**GOOD, "image": _b64(_encoded((64, 64))), "mask_image": _b64(_encoded((64, 32), mode="L"))}
    error = _error(client.post("/generate", json=body))
    assert error["message"] == "mask_image: 64x32 does not match image's 64x64"


@pytest.mark.parametrize(
    ("patch", "text"),
    [
        ({"image": "abc"}, "mask_image: inpainting needs both image and mask_image"),
        ({"init_image": "abc", "image": "abc", "mask_image": "abc"}, "not both"),
        ({"init_image": "abc", "strength": 0.1}, "strength: steps*strength = 0.4 runs no step"),
        ({"init_image": "abc", "strength": 1.5}, "strength: Input should be less than or equal to 1"),
    ],
)
def test_inconsistent_modes_are_422(client: TestClient, patch: dict, text: str) -> None:
    error = _error(client.post("/generate", json={**GOOD, **patch}))
    assert text in error["message"]


def test_multipart_with_a_bad_image_part_is_422(client: TestClient) -> None:
    response = client.post(
        "/generate",
        data={"prompt": "a red circle", "steps": "4"},
        files={"init_image": ("x.png", b"not an image", "image/png")},
    )
    assert "init_image: not an image" in _error(response)["message"]


def test_multipart_file_part_of_an_unknown_field_is_422(client: TestClient) -> None:
    response = client.post("/generate", data={"prompt": "x"}, files={"picture": ("x.png", _encoded(), "image/png")})
    assert "picture: not an image field" in _error(response)["message"]


def test_multipart_fields_are_validated_like_json(client: TestClient) -> None:
    response = client.post(
        "/generate", data={"prompt": "x", "steps": "many"}, files={"init_image": ("x.png", _encoded(), "image/png")}
    )
    error = _error(response)
    assert error["details"][0]["field"] == "steps"
