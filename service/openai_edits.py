"""The multipart body of `POST /v1/images/edits` as the `openai` client sends it, and OpenAI's mask convention.

- `image`: one file part (the client names a list's parts `image[]`; one of those is accepted too). This service
  edits one image per request: several are refused (422 naming `image`) rather than some of them silently dropped.
- `mask`: a PNG whose fully transparent pixels (alpha 0) mark where to edit. It becomes the native inpainting mask
  (white repaints, black keeps); without `mask` the edit is img2img over the whole image.
- Other parts are text fields (`ImagesEditForm`); file parts other than these (`markup`, ...) are refused.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile

from core.fields import Strength
from core.schemas import GenerateRequest
from core.settings import Settings
from service.errors import ApiError
from service.inputs import check_image
from service.openai_compat import ImagesRequestFields, default_steps, generate_request

IMAGE_PARTS = ("image", "image[]")
MASK_PART = "mask"
# img2img's default strength for an edit without a mask: enough to follow the prompt, while keeping the input's
# layout and colours (diffusers' own default, 0.8, keeps little of it). Inpainting repaints the masked area fully (1).
EDIT_STRENGTH = 0.6
INPAINT_STRENGTH = 1.0
# OpenAI takes up to 16 input images; counting them to refuse more than one needs them parsed.
_MAX_FILES = 20


class ImagesEditForm(ImagesRequestFields):
    """The text fields of an edit: OpenAI's, and `strength` (this service's; the default depends on the mask)."""

    strength: Strength | None = Field(
        default=None,
        description=f"How much to redraw: absent, {EDIT_STRENGTH} without a mask (img2img), {INPAINT_STRENGTH} with "
        "one (the masked area)",
    )


@dataclass(frozen=True)
class EditForm:
    """A parsed edit: its text fields, the image's bytes and the mask's, if any (as sent)."""

    fields: ImagesEditForm
    image: bytes
    mask: bytes | None


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", code="invalid_request", details=[{"field": field, "message": message}])


async def read_edit_form(request: Request) -> EditForm:
    """The multipart body of an edit: one image, an optional mask, the text fields (422 naming the part at fault)."""
    text: dict[str, str] = {}
    images: list[bytes] = []
    mask: bytes | None = None
    async with request.form(max_files=_MAX_FILES, max_fields=64) as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name in IMAGE_PARTS:
                    images.append(await value.read())
                elif name == MASK_PART and mask is None:
                    mask = await value.read()
                elif name == MASK_PART:
                    raise _refuse(MASK_PART, "given more than once")
                else:
                    raise _refuse(name, f"file parts other than image and mask are not supported (got {name})")
            elif name in text:
                raise _refuse(name, "given more than once")
            elif name in IMAGE_PARTS or name == MASK_PART:
                raise _refuse(name.removesuffix("[]"), "must be a file part (an image), not a text field")
            else:
                text[name] = value
    if not images:
        raise _refuse("image", "required: the image to edit, as a file part")
    if len(images) > 1:
        raise _refuse("image", f"this server edits one image per request; got {len(images)}")
    try:
        fields = ImagesEditForm.model_validate(text)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    return EditForm(fields, images[0], mask)


def inpainting_mask(data: bytes, *, max_pixels: int, max_bytes: int) -> bytes:
    """OpenAI's mask (fully transparent pixels: edit there) as the native one: a PNG, white where alpha is 0, black
    elsewhere. 422 naming `mask` for one that is not an image, has no alpha, or has no fully transparent pixel."""
    check_image(MASK_PART, data, max_pixels=max_pixels, max_bytes=max_bytes)  # limits before decoding
    image = Image.open(io.BytesIO(data))
    if "A" not in image.getbands() and "transparency" not in image.info:
        raise _refuse(MASK_PART, "has no alpha channel: its fully transparent pixels (alpha 0) mark where to edit")
    alpha = image.convert("RGBA").getchannel("A")
    native = alpha.point(lambda value: 255 if value == 0 else 0)
    if native.getbbox() is None:
        raise _refuse(MASK_PART, "has no fully transparent pixel (alpha 0): nothing to edit")
    buffer = io.BytesIO()
    native.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_request(form: EditForm, settings: Settings) -> GenerateRequest:
    """The native request of an edit: img2img of the image, or inpainting where the mask is transparent; `size`
    (absent or `auto`: the image's) is the output's, the worker resizing the image (and mask) to it."""
    fields = form.fields
    image = base64.b64encode(form.image).decode("ascii")
    if form.mask is None:
        strength = fields.strength or EDIT_STRENGTH
        native: dict[str, object] = {"init_image": image}
    else:
        strength = fields.strength or INPAINT_STRENGTH
        mask = inpainting_mask(form.mask, max_pixels=settings.max_pixels, max_bytes=settings.max_input_image_bytes)
        native = {"image": image, "mask_image": base64.b64encode(mask).decode("ascii")}
    if fields.strength is None and int(default_steps(settings, fields.model) * strength) < 1:
        strength = 1.0  # a model that runs very few steps: the default must still run one (a strength sent is kept)
    return generate_request(fields, settings, strength=strength, **native)
