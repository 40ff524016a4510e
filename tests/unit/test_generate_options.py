"""`imagegen generate`'s options come from `GenerateRequest`: one per field, typed, with its bounds and values."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

import pytest

from client.generate_command import request_body
from client.generate_options import CUSTOM_FIELDS, flag, request_option_fields
from core.schemas import GenerateRequest, Sampler
from launcher.main import build_parser

SCHEMA = GenerateRequest.model_json_schema()


def _generate_parser() -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["generate"]


def _options() -> dict[str, argparse.Action]:
    return {option: action for action in _generate_parser()._actions for option in action.option_strings}


def _property(name: str) -> dict[str, Any]:
    """A field's JSON schema, the non-null branch of an optional one."""
    prop = SCHEMA["properties"][name]
    branches = [branch for branch in prop.get("anyOf", [prop]) if branch.get("type") != "null"]
    return {**branches[0], **{k: v for k, v in prop.items() if k != "anyOf"}}


def test_every_request_field_is_an_option_or_set_another_way() -> None:
    options = _options()
    for name in GenerateRequest.model_fields:
        if name in CUSTOM_FIELDS:
            continue
        assert flag(name) in options, f"GenerateRequest.{name} has no `imagegen generate` option"
        assert options[flag(name)].dest == name
        assert options[flag(name)].default is None, "a field left out must take the model's default on the server"
    assert set(request_option_fields()) == set(GenerateRequest.model_fields) - set(CUSTOM_FIELDS)
    assert set(CUSTOM_FIELDS) <= set(GenerateRequest.model_fields)


@pytest.mark.parametrize("name", ["width", "steps", "guidance_scale", "num_images", "strength", "seed"])
def test_types_and_bounds_come_from_the_schema(name: str) -> None:
    prop = _property(name)
    action = _options()[flag(name)]
    assert action.type is {"integer": int, "number": float}[prop["type"]]
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum", prop.get("exclusiveMaximum"))
    assert action.help is not None
    for bound in (low, high):
        text = f"{bound:g}" if isinstance(bound, float) else str(bound)
        assert text in action.help, action.help


def test_sampler_values_are_the_enums() -> None:
    help_text = _options()["--sampler"].help or ""
    assert help_text.endswith("one of " + ", ".join(sampler.value for sampler in Sampler))
    # Shown, not enforced by argparse: the schema refuses a bad one (exit 1, invalid_request), as for any field.
    assert _generate_parser().parse_args(["x", "--sampler", "warp-drive"]).sampler == "warp-drive"


def test_the_command_line_becomes_the_request_body(tmp_path: Path) -> None:
    init = tmp_path / "in.png"
    init.write_bytes(b"\x89PNG not really")
    args = _generate_parser().parse_args(
        [
            "a red circle",
            "-o",
            str(tmp_path / "out.webp"),
            *("--negative-prompt", "blue", "--width", "64", "--height", "128", "--steps", "8"),
            *("--guidance-scale", "4.5", "--sampler", "euler", "--seed", "7", "-n", "2", "--model", "demo"),
            *("--strength", "0.5", "--init-image", str(init), "--preview", "4"),
            *("--lora", "ink", "--lora", "bold:0.5", "--output-quality", "80"),
            *("--webhook-events", "failed", "--webhook-events", "succeeded"),
        ]
    )
    assert request_body(args) == {
        "prompt": "a red circle",
        "negative_prompt": "blue",
        "width": 64,
        "height": 128,
        "steps": 8,
        "guidance_scale": 4.5,
        "sampler": "euler",
        "seed": 7,
        "num_images": 2,
        "model": "demo",
        "strength": 0.5,
        "init_image": base64.b64encode(init.read_bytes()).decode(),
        "preview_every": 4,
        "loras": [{"name": "ink"}, {"name": "bold", "scale": 0.5}],
        "output_quality": 80,
        "webhook_events": ["failed", "succeeded"],
        "output_format": "webp",
    }
    GenerateRequest.model_validate(request_body(args))


def test_left_out_options_are_left_out_of_the_body() -> None:
    args = _generate_parser().parse_args(["a cat"])
    assert request_body(args) == {"prompt": "a cat", "output_format": "png"}
