"""Input images of img2img and inpainting: decoded from base64 (JSON) or taken from multipart parts, checked before
anything decodes their pixels, and stored beside the job as sent (the request keeps a `sha256:` reference).

The declared size in an image's header is checked against `max_pixels` before Pillow decodes a single pixel, so a
small file that expands to a huge bitmap (a decompression bomb) is refused cheaply; then the whole image is decoded
once to refuse truncated or corrupt data at submission rather than in the worker.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from core.schemas import INPUT_REFERENCE_PREFIX, GenerateRequest, GenerationMode
from service.errors import ApiError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # "Image size (N pixels) exceeds limit of M pixels, ..."


def _invalid(field: str, message: str, **details: object) -> ApiError:
    return ApiError(
        422, f"{field}: {message}", code="invalid_request", details=[{"field": field, "message": message, **details}]
    )


@dataclass(frozen=True)
class CheckedImage:
    """An input image's bytes (as sent) and its size in pixels."""

    data: bytes
    width: int
    height: int

    @property
    def reference(self) -> str:
        """What the stored request holds in place of the bytes."""
        return INPUT_REFERENCE_PREFIX + hashlib.sha256(self.data).hexdigest()


def decode_base64(field: str, value: str) -> bytes:
    """The bytes of a base64 string or a `data:<type>;base64,` URL."""
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if not header.endswith(";base64"):
            raise _invalid(field, "a data: URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(field, f"not valid base64 ({exc})") from exc


def check_image(field: str, data: bytes, *, max_pixels: int, max_bytes: int) -> CheckedImage:
    """Refuse what is not a PNG, JPEG or WebP image within the limits; return its size."""
    if len(data) > max_bytes:
        raise _invalid(field, f"{len(data)} bytes is over the limit of {max_bytes} bytes", limit=max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow's own guard, for sizes far past any sane limit, refuses before handing the size out; its
            # message says only the pixel count, which ours keeps.
            counted = _PILLOW_PIXELS.search(str(exc))
            has = f" (it has {counted.group(1)})" if counted else ""
            raise _invalid(field, f"over the limit of {max_pixels} pixels{has}", limit=max_pixels) from exc
        except UnidentifiedImageError as exc:
            raise _invalid(field, "not an image (send PNG, JPEG or WebP)") from exc
        if image.format not in ACCEPTED_FORMATS:
            raise _invalid(field, f"{image.format} images are not accepted; send PNG, JPEG or WebP")
        width, height = image.size
        if width * height > max_pixels:
            raise _invalid(
                field,
                f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels} pixels",
                limit=max_pixels,
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
            raise _invalid(field, f"the image data is truncated or corrupt ({exc})") from exc
    return CheckedImage(data, width, height)


def _side(pixels: int) -> int:
    """An image side rounded down to a multiple of 8, within the request's 64..2048."""
    return min(2048, max(64, pixels - pixels % 8))


def prepare_inputs(
    request: GenerateRequest, *, max_pixels: int, max_bytes: int
) -> tuple[GenerateRequest, dict[str, bytes]]:
    """Check the request's input images (and that it sets `strength` only with one); return the request with
    `sha256:` references in their place (and, when the client gave no size, the size of the input image) and the
    bytes to store by field."""
    request.check_as_sent()  # strength without an input image: 422 naming it
    fields = request.image_fields()
    if not fields:
        return request, {}
    checked = {
        field: check_image(field, decode_base64(field, value), max_pixels=max_pixels, max_bytes=max_bytes)
        for field, value in fields.items()
    }
    source = checked["init_image" if request.mode is GenerationMode.IMG2IMG else "image"]
    if request.mode is GenerationMode.INPAINT:
        mask = checked["mask_image"]
        if (mask.width, mask.height) != (source.width, source.height):
            raise _invalid(
                "mask_image",
                f"{mask.width}x{mask.height} does not match image's {source.width}x{source.height}",
            )
    update: dict[str, object] = {field: image.reference for field, image in checked.items()}
    if "width" not in request.model_fields_set:
        update["width"] = _side(source.width)
    if "height" not in request.model_fields_set:
        update["height"] = _side(source.height)
    return request.model_copy(update=update), {field: image.data for field, image in checked.items()}
