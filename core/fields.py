"""The request field types, declared once: their bounds hold wherever a prompt, size, step count, guidance scale,
seed or image count is accepted (`GenerateRequest`, a models-file entry's defaults, the OpenAI request)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

SEED_MAX = 2**32 - 1
STEPS_MAX = 150
SIZE_MULTIPLE = 8
NUM_IMAGES_MAX = 8


def _multiple_of_size_step(value: int) -> int:
    if value % SIZE_MULTIPLE:
        raise ValueError(f"must be a multiple of {SIZE_MULTIPLE}, got {value}")
    return value


Prompt = Annotated[str, Field(min_length=1, max_length=2000)]
NegativePrompt = Annotated[str, Field(max_length=2000)]
ImageSide = Annotated[
    int,
    Field(
        ge=64,
        le=2048,
        description=f"Pixels; a multiple of {SIZE_MULTIPLE} in 64..2048, and of the model's size step (GET /models "
        "capabilities.size_multiple: 16 for flux, sd3, qwen-image).",
        # Said in the schema too, so the playground's inputs step by it; checked below with a message that names it.
        json_schema_extra={"multipleOf": SIZE_MULTIPLE},
    ),
    AfterValidator(_multiple_of_size_step),
]
Steps = Annotated[int, Field(ge=1, le=STEPS_MAX)]
GuidanceScale = Annotated[float, Field(ge=0.0, le=30.0, allow_inf_nan=False)]
# FLUX's and Qwen-Image's true classifier-free guidance; 1 is off (the request field says more).
TrueCfgScale = Annotated[float, Field(ge=1.0, le=30.0, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
NumImages = Annotated[int, Field(ge=1, le=NUM_IMAGES_MAX)]
Strength = Annotated[
    float,
    Field(
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="img2img and inpainting: how much to redraw (1: all of it); runs steps*strength steps.",
    ),
]
