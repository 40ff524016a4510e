"""The arguments of `imagegen generate`: one `--field` option per `GenerateRequest` field, read from the schema.

A field added to the schema becomes an option with no edit here: its flag is `--` + the field name with `-` for `_`,
its type comes from the annotation, and its help from the field's description and bounds. The few fields the command
fills another way (the prompt, input images as files, LoRAs as NAME[:SCALE], the format from the output's suffix) are
listed in `CUSTOM_FIELDS`. Options default to None so that a field left out takes the model's default on the server.
"""

from __future__ import annotations

import argparse
import os
import types
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from core.families import ModelFamily
from core.samplers import samplers_for
from core.schemas import IMAGE_FIELDS, GenerateRequest, LoraSpec

# Request fields the command does not take as `--field VALUE`, and what sets them instead.
CUSTOM_FIELDS: dict[str, str] = {
    "prompt": "the positional PROMPT",
    "output_format": "the suffix of -o/--output",
    "loras": "--lora NAME[:SCALE], repeatable",
    **{name: f"--{name.replace('_', '-')} PATH: the file, sent as base64" for name in IMAGE_FIELDS},
}
# Shorter spellings kept from before the options were generated, and metavars that say more than the type.
ALIASES: dict[str, tuple[str, ...]] = {"num_images": ("-n",), "preview_every": ("--preview",)}
METAVARS: dict[str, str] = {"preview_every": "K"}


def _sampler_note() -> str:
    """Which samplers fit which families, from the one sampler table (GET /models lists each model's)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for family in ModelFamily:
        names = tuple(sampler.value + ("" if len(sampler.modes) > 1 else "*") for sampler in samplers_for(family))
        groups.setdefault(names, []).append(family.value)
    parts = [f"{', '.join(families)}: {', '.join(samplers)}" for samplers, families in groups.items()]
    return (
        "a model takes its family's (GET /models: capabilities.samplers_by_mode): "
        + "; ".join(parts)
        + " (*: text-to-image only)"
    )


# What an option means on the command line beyond the schema's description.
CLI_NOTES: dict[str, str] = {
    "preview_every": "kept up to date in OUT.preview.webp beside the output",
    "sampler": _sampler_note(),
}
_IMAGE_HELP: dict[str, str] = {
    "init_image": "img2img: the starting image",
    "image": "inpainting: the image (with --mask-image)",
    "mask_image": "inpainting: white repaints",
}
_BOUND_NAMES = ("ge", "gt", "le", "lt", "min_length", "max_length")


def flag(name: str) -> str:
    """The long option of a request field: `num_images` -> `--num-images`."""
    return "--" + name.replace("_", "-")


def _without_none(annotation: Any) -> Any:
    """`X | None` -> X; anything else as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _unwrapped(annotation: Any) -> tuple[Any, list[Any]]:
    """The bare type under `Annotated[...]` and `| None`, with the constraints found on the way."""
    found: list[Any] = []
    while True:
        annotation = _without_none(annotation)
        if get_origin(annotation) is not Annotated:
            return annotation, found
        annotation, *extras = get_args(annotation)
        for extra in extras:
            found += extra.metadata if isinstance(extra, FieldInfo) else [extra]


def _scalar(annotation: Any) -> tuple[type, list[str] | None] | None:
    """The argparse type of a scalar annotation and its allowed values (enums, literals); None when not a scalar."""
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return str, [str(member.value) for member in annotation]
    if get_origin(annotation) is Literal:
        values = get_args(annotation)
        return type(values[0]), [str(value) for value in values]
    if annotation in (int, float, str, bool):
        return annotation, None
    return None


def _bounds(constraints: list[Any]) -> dict[str, Any]:
    """`ge`, `gt`, `le`, `lt`, `min_length`, `max_length` of a field, however its constraints are declared."""
    found: dict[str, Any] = {}
    for item in constraints:
        for name in _BOUND_NAMES:
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return found


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _bounds_text(bounds: dict[str, Any], *, repeated: bool) -> str:
    """The bounds as help text: `1..150`, `> 0, <= 1`, `at most 2000 characters`."""
    parts = []
    if "ge" in bounds and "le" in bounds:
        parts.append(f"{_number(bounds['ge'])}..{_number(bounds['le'])}")
    else:
        operators = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        parts += [f"{op} {_number(bounds[name])}" for name, op in operators if name in bounds]
    if "max_length" in bounds:
        parts.append(f"at most {bounds['max_length']}" + ("" if repeated else " characters"))
    return ", ".join(parts)


def _help(name: str, field: FieldInfo, bounds: dict[str, Any], choices: list[str] | None, *, repeated: bool) -> str:
    parts = [field.description.rstrip(".")] if field.description else []
    if name in CLI_NOTES:
        parts.append(CLI_NOTES[name])
    if choices:
        parts.append("one of " + ", ".join(choices))
    bounds_text = _bounds_text(bounds, repeated=repeated)
    if bounds_text and not (field.description and bounds_text in field.description):
        parts.append(bounds_text)
    if repeated:
        parts.append("repeatable")
    # argparse %-formats help texts
    return ("; ".join(parts) or name.replace("_", " ")).replace("%", "%%")


def _option(name: str, field: FieldInfo) -> dict[str, Any]:
    """The `add_argument` keywords of a request field; TypeError for a type the command cannot take as text."""
    annotation, constraints = _unwrapped(field.annotation)
    constraints = [*field.metadata, *constraints]
    repeated = get_origin(annotation) is list
    if repeated:
        (item,) = get_args(annotation)
        annotation, item_constraints = _unwrapped(item)
        constraints += item_constraints
    scalar = _scalar(annotation)
    if scalar is None:
        raise TypeError(f"GenerateRequest.{name}: no command-line form for {field.annotation!r} (see CUSTOM_FIELDS)")
    kind, choices = scalar
    # Allowed values are shown, not enforced: the schema validates them, so a bad value is the same
    # `invalid_request: field: ...` (exit 1) as any other.
    text = _help(name, field, _bounds(constraints), choices, repeated=repeated)
    keywords: dict[str, Any] = {"dest": name, "help": text}
    if kind is bool:
        keywords["action"] = argparse.BooleanOptionalAction
    else:
        keywords["type"] = kind
        keywords["metavar"] = METAVARS.get(name, name.upper())
        if repeated:
            keywords["action"] = "append"
    return keywords


def request_option_fields() -> list[str]:
    """The request fields that are `--field VALUE` options, in the schema's order."""
    return [name for name in GenerateRequest.model_fields if name not in CUSTOM_FIELDS]


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per request field that is not in `CUSTOM_FIELDS` (see the module's docstring)."""
    for name in request_option_fields():
        # `-n, --num-images`: short spellings first, as argparse's help lists them
        names = sorted([flag(name), *ALIASES.get(name, ())], key=lambda option: option.startswith("--"))
        parser.add_argument(*names, **_option(name, GenerateRequest.model_fields[name]))


def _lora_help() -> str:
    """`--lora`'s help, with the scale's bounds and default and the most adapters a request takes."""
    scale = LoraSpec.model_fields["scale"]
    scale_bounds = _bounds([*scale.metadata, *_unwrapped(scale.annotation)[1]])
    loras = GenerateRequest.model_fields["loras"]
    at_most = _bounds([*loras.metadata, *_unwrapped(loras.annotation)[1]]).get("max_length")
    limit = f", at most {at_most}" if at_most is not None else ""
    scale_text = _bounds_text(scale_bounds, repeated=False)
    return f"a LoRA adapter, SCALE {scale_text} (default {_number(scale.default)}); repeatable{limit}"


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """All the arguments of `imagegen generate`: the prompt, the request's options and the command's own."""
    parser.add_argument("prompt")
    parser.add_argument("-o", "--output", default="out.png", help="file to write (more images: out-1.png, ...)")
    parser.add_argument("--url", default=os.environ.get("IMAGEGEN_URL", "http://127.0.0.1:8000"))
    add_request_options(parser)
    for name in IMAGE_FIELDS:
        description = _IMAGE_HELP.get(name) or GenerateRequest.model_fields[name].description or name
        parser.add_argument(flag(name), dest=name, metavar="PATH", help=f"{description} (a PNG, JPEG or WebP file)")
    parser.add_argument("--lora", action="append", metavar="NAME[:SCALE]", help=_lora_help())
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("IMAGEGEN_API_KEY"),
        help="sent as Authorization: Bearer (default: $IMAGEGEN_API_KEY)",
    )
