"""AUTOMATIC1111's `parameters` text (its "infotext"), read back from an image file: the PNG text chunk the worker
writes (worker/encoding.py), or the EXIF UserComment of a JPEG or WebP, and parsed as A1111's png-info parses it."""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from typing import Any

from PIL import Image

# A1111's own pattern for one `Key: value` of the settings line (a value with a comma is JSON-quoted).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


class UnreadableImageError(ValueError):
    """The bytes are not an image Pillow can open."""


def read_infotext(data: bytes) -> tuple[str | None, dict[str, Any]]:
    """The `parameters` text of an encoded image (None if it has none) and its other text items. Reads the file's
    metadata only: no pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # no pixel is decoded here
            image = Image.open(io.BytesIO(data))
            # `info` holds the text chunks before the image data (where A1111 and this service write them);
            # `image.text` would decode every pixel to find any after it.
            items: dict[str, Any] = {
                str(key): value for key, value in image.info.items() if isinstance(key, str) and isinstance(value, str)
            }
            comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(str(exc)) from exc
    text = items.pop("parameters", None)
    if text is None and isinstance(comment, bytes) and comment.startswith(b"UNICODE\0"):
        text = comment[8:].decode("utf-16-be", errors="replace")
    elif text is None and isinstance(comment, str):
        text = comment
    return text, items


def parse_infotext(text: str) -> dict[str, Any]:
    """The fields of a `parameters` text as A1111's png-info gives them: `Prompt`, `Negative prompt`, then each
    `Key: value` of the settings line (values as written; `Size: WxH` as `Size-1` and `Size-2`)."""
    lines = text.strip().split("\n")
    settings = lines.pop() if lines and len(_PARAM.findall(lines[-1])) >= 3 else ""
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        if line.startswith(_NEGATIVE):
            target, line = negative, line[len(_NEGATIVE) :].strip()
        target.append(line)
    fields: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, raw in _PARAM.findall(settings):
        value = raw.strip()
        if len(value) > 1 and value[0] == value[-1] == '"':
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        size = _SIZE.match(value)
        if size:
            fields[f"{key}-1"], fields[f"{key}-2"] = size.groups()
        else:
            fields[key] = value
    return fields
