"""OpenAI's edit conventions as the native request's: the alpha mask, the partial-image cadence."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from service.errors import ApiError
from service.openai_compat import preview_every
from service.openai_edits import inpainting_mask

LIMITS = {"max_pixels": 1024 * 1024, "max_bytes": 1024 * 1024}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _native(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(inpainting_mask(data, **LIMITS)))


def test_fully_transparent_pixels_repaint_and_every_other_pixel_keeps() -> None:
    mask = Image.new("RGBA", (4, 2), (255, 255, 255, 255))
    mask.putpixel((0, 0), (9, 9, 9, 0))  # transparent, whatever its colour: edit
    mask.putpixel((1, 0), (0, 0, 0, 1))  # nearly transparent: OpenAI edits only where alpha is 0
    native = _native(_png(mask))
    assert native.mode == "L" and native.size == (4, 2)
    assert list(native.tobytes()) == [255, 0, 0, 0, 0, 0, 0, 0]


def test_a_palette_png_with_a_transparent_index_is_a_mask() -> None:
    mask = Image.new("P", (2, 1))
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.putpixel((1, 0), 1)
    mask.info["transparency"] = 1
    assert list(_native(_png(mask)).tobytes()) == [0, 255]


@pytest.mark.parametrize(
    ("mask", "says"),
    [
        (Image.new("RGB", (8, 8)), "has no alpha channel"),
        (Image.new("RGBA", (8, 8), (0, 0, 0, 255)), "no fully transparent pixel"),
    ],
)
def test_a_mask_that_marks_nothing_is_refused_naming_mask(mask: Image.Image, says: str) -> None:
    with pytest.raises(ApiError) as info:
        inpainting_mask(_png(mask), **LIMITS)
    assert info.value.status == 422 and info.value.message.startswith("mask: ") and says in info.value.message


def test_a_mask_over_the_limits_is_refused_before_decoding() -> None:
    with pytest.raises(ApiError) as info:
        inpainting_mask(_png(Image.new("RGBA", (64, 64))), max_pixels=32 * 32, max_bytes=1024 * 1024)
    assert info.value.message.startswith("mask: ") and "limit of 1024 pixels" in info.value.message


@pytest.mark.parametrize(
    ("steps", "partial_images", "every", "previews"),
    [(25, 2, 9, 2), (20, 3, 5, 4), (4, 2, 2, 2), (2, 3, 1, 2), (15, 1, 8, 1), (30, 0, 0, 0)],
)
def test_partial_images_map_onto_previews_before_the_last_step(
    steps: int, partial_images: int, every: int, previews: int
) -> None:
    assert preview_every(steps, partial_images) == every
    assert (len(range(every, steps + 1, every)) if every else 0) == previews
