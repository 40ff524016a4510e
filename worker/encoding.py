"""Encoding result images into the format a request asked for, with the generation parameters inside the file
(AUTOMATIC1111's `parameters` text, which tools that read A1111 files understand)."""

from __future__ import annotations

import io

from PIL import Image, PngImagePlugin

from core.families import family_row
from core.schemas import GenerateRequest, GenerationMode, OutputFormat

DEFAULT_QUALITY = {OutputFormat.JPEG: 92, OutputFormat.WEBP: 90}
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


def guidance_parameters(request: GenerateRequest, family: str | None = None) -> str:
    """The guidance settings of the parameters text, as the A1111 line of tools (AUTOMATIC1111, Forge) writes them
    for the model's family: `CFG scale` is the classifier-free guidance scale that ran. For FLUX and Qwen-Image that
    is `true_cfg_scale` (1: off), and a guidance strength the model takes as an input is `Distilled CFG Scale`
    (FLUX's `guidance_scale`; Qwen-Image's where a guidance-distilled checkpoint reads it, i.e. other than 1). Other
    families, and a model of unknown family: `CFG scale` is `guidance_scale`."""
    row = family_row(family)
    if not row.true_cfg:
        return f"CFG scale: {request.guidance_scale:g}"
    text = f"CFG scale: {request.true_cfg_scale or 1.0:g}"
    if row.guidance == "distilled" or request.guidance_scale != 1.0:
        text += f", Distilled CFG Scale: {request.guidance_scale:g}"
    return text


def a1111_parameters(request: GenerateRequest, seed: int, model: str, family: str | None = None) -> str:
    """The AUTOMATIC1111 `parameters` text of one image: prompt, negative prompt, then the settings line (the
    sampler by its A1111 name; the guidance as `family`, a `core.families.ModelFamily` value, takes it)."""
    # LoRA adapters as AUTOMATIC1111 writes them: `<lora:name:scale>` after the prompt.
    lines = [" ".join([request.prompt, *(f"<lora:{lora.name}:{lora.scale:g}>" for lora in request.loras)])]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    settings = (
        f"Steps: {request.steps}, Sampler: {request.sampler.a1111_name}, {guidance_parameters(request, family)}, "
        f"Seed: {seed}, Size: {request.width}x{request.height}, Model: {model}"
    )
    if request.mode is not GenerationMode.TXT2IMG:
        settings += f", Denoising strength: {request.strength:g}"
    lines.append(settings)
    return "\n".join(lines)


def encode_image(
    image: Image.Image, output_format: OutputFormat, *, parameters: str | None = None, quality: int | None = None
) -> bytes:
    """The image's bytes in `output_format`: PNG lossless with a `parameters` text chunk; JPEG and WebP at `quality`
    (92 and 90 by default) with the parameters as EXIF UserComment."""
    buffer = io.BytesIO()
    image = image.convert("RGB")
    if output_format is OutputFormat.PNG:
        info = PngImagePlugin.PngInfo()
        if parameters:
            info.add_text("parameters", parameters)
        image.save(buffer, format="PNG", compress_level=4, pnginfo=info)
        return buffer.getvalue()
    exif = Image.Exif()
    if parameters:
        # EXIF UserComment: an 8-byte character-code prefix, then the text (UTF-16, as A1111 writes it).
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
    save_format = "JPEG" if output_format is OutputFormat.JPEG else "WEBP"
    image.save(buffer, format=save_format, quality=quality or DEFAULT_QUALITY[output_format], exif=exif.tobytes())
    return buffer.getvalue()


def read_parameters(data: bytes) -> str | None:
    """The `parameters` text inside an encoded image, or None."""
    image = Image.open(io.BytesIO(data))
    if image.format == "PNG":
        return image.text.get("parameters")  # type: ignore[attr-defined]
    comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, bytes) and comment.startswith(b"UNICODE\0"):
        return comment[8:].decode("utf-16-be")
    return comment if isinstance(comment, str) else None
