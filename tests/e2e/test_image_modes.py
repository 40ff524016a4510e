"""img2img (base64 JSON) and inpainting (multipart upload) through real `imagegen api` and `imagegen worker`
processes with the tiny model."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

from tests.e2e.processes import Stack
from worker.encoding import read_parameters


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), (30, 60, 220))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    return image


def _result(stack: Stack, job: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(stack.client.get(job["images"][0]).content)).convert("RGB")).astype(int)


def test_img2img_from_base64_json(stack: Stack) -> None:
    data = _png(_picture())
    job = stack.submit(prompt="a green square", init_image=base64.b64encode(data).decode(), strength=0.5, steps=8)
    # No size given: the input's. The record keeps a reference to the stored bytes, not the bytes.
    assert (job["request"]["width"], job["request"]["height"]) == (64, 64)
    assert job["request"]["init_image"].startswith("sha256:")
    done = stack.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["total"] == 4  # int(8 * 0.5) steps run
    assert _result(stack, done).shape == (64, 64, 3)
    assert "Denoising strength: 0.5" in read_parameters(stack.client.get(done["images"][0]).content)


def test_inpainting_from_multipart_keeps_unmasked_pixels(stack: Stack) -> None:
    source = _picture()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    response = stack.client.post(
        "/generate",
        data={"prompt": "a yellow triangle", "steps": "4", "strength": "1", "seed": "3"},
        files={"image": ("in.png", _png(source), "image/png"), "mask_image": ("mask.png", _png(mask), "image/png")},
    )
    assert response.status_code == 202, response.text
    done = stack.wait_job(response.json()["id"])
    assert done["status"] == "succeeded", done
    result, given = _result(stack, done), np.asarray(source).astype(int)
    assert np.abs(result[:, 32:] - given[:, 32:]).max() <= 1
    assert np.abs(result[:, :32] - given[:, :32]).mean() > 20


def test_bad_images_are_refused_by_the_running_api(stack: Stack) -> None:
    not_image = stack.client.post("/generate", json={"prompt": "x", "init_image": base64.b64encode(b"hi").decode()})
    assert not_image.status_code == 422
    assert not_image.json()["error"]["message"] == "init_image: not an image (send PNG, JPEG or WebP)"
    mismatch = stack.client.post(
        "/generate",
        files={
            "image": ("in.png", _png(_picture()), "image/png"),
            "mask_image": ("m.png", _png(Image.new("L", (32, 32))), "image/png"),
        },
        data={"prompt": "x"},
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["error"]["message"] == "mask_image: 32x32 does not match image's 64x64"
