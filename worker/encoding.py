"""Encoding result images into the format a request asked for."""

from __future__ import annotations

import io

from PIL import Image

from core.schemas import OutputFormat

_SAVE_OPTIONS: dict[OutputFormat, dict[str, object]] = {
    OutputFormat.PNG: {"format": "PNG", "compress_level": 4},
    OutputFormat.JPEG: {"format": "JPEG", "quality": 92},
    OutputFormat.WEBP: {"format": "WEBP", "quality": 90},
}


def encode_image(image: Image.Image, output_format: OutputFormat) -> bytes:
    """The image's bytes in `output_format` (PNG lossless; JPEG and WebP at high quality)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, **_SAVE_OPTIONS[output_format])
    return buffer.getvalue()
