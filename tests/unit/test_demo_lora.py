"""The shipped `colour-swap` LoRA for `demo` (worker/models/demo-loras): through the worker's LoRA code it swaps the
colours the demo draws and leaves pictures alone once switched off, and `tools/make_demo_lora.py` makes it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from core.schemas import LoraSpec
from tests.demo_colours import picture_colours
from tools.make_demo_lora import NAME, SWAP, Config, all_captions, distil, encode
from worker.pipeline.loading import DEMO_MODEL_DIR
from worker.pipeline.loras import LoraAdapters, available_loras

LORA_DIR = DEMO_MODEL_DIR.parent / "demo-loras"
# (shape colour, shape, background), one per colour as shape and as background.
CASES = [
    ("red", "circle", "blue"),
    ("yellow", "square", "black"),
    ("white", "triangle", "green"),
    ("green", "circle", "white"),
    ("black", "square", "yellow"),
    ("blue", "triangle", "red"),
]

pytestmark = pytest.mark.skipif(
    not (DEMO_MODEL_DIR / "model_index.json").exists(), reason="demo weights not trained into the package"
)


@pytest.fixture(scope="module")
def pipe() -> Iterator[StableDiffusionPipeline]:
    pipeline = StableDiffusionPipeline.from_pretrained(str(DEMO_MODEL_DIR))
    pipeline.set_progress_bar_config(disable=True)
    yield pipeline


def _draw(pipe: StableDiffusionPipeline) -> list[tuple[str, str | None]]:
    """(background, shape colour) of each case's picture, 20 Euler steps at guidance 4, seed = the case's index."""
    images = pipe(
        [f"a {fg} {shape} on a {bg} background" for fg, shape, bg in CASES],
        num_inference_steps=20,
        guidance_scale=4.0,
        height=64,
        width=64,
        generator=[torch.Generator().manual_seed(i) for i in range(len(CASES))],
    ).images
    return [picture_colours(np.asarray(image)) for image in images]


def test_the_adapter_is_shipped_where_the_readme_points() -> None:
    assert available_loras(LORA_DIR) == [NAME]
    assert "IMAGEGEN_LORA_DIR=worker/models/demo-loras" in (Path(__file__).parents[2] / "README.md").read_text()


def test_colour_swap_swaps_the_demo_palette_and_switches_off(pipe: StableDiffusionPipeline) -> None:
    adapters = LoraAdapters(pipe, LORA_DIR)
    asked = [(bg, fg) for fg, _, bg in CASES]
    assert _draw(pipe) == asked
    adapters.check([LoraSpec(name=NAME)])
    with adapters.applied([LoraSpec(name=NAME, scale=1.0)]):
        assert _draw(pipe) == [(SWAP[bg], SWAP[fg]) for bg, fg in asked]
    assert _draw(pipe) == asked


@pytest.mark.slow
def test_the_script_makes_the_shipped_adapter_again() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs; the shipped file is byte-identical on the same torch build
    try:
        remade = distil(Config())
    finally:
        torch.set_num_threads(threads)
    shipped = load_file(LORA_DIR / f"{NAME}.safetensors")
    assert {key.removeprefix("text_encoder.") for key in shipped} == {
        key.replace(".default.", ".") for key in remade.state_dict() if ".lora_" in key
    }
    captions = all_captions()
    pipe = StableDiffusionPipeline.from_pretrained(str(DEMO_MODEL_DIR))  # its own: the shared one holds adapters
    pipe.load_lora_weights(str(LORA_DIR), weight_name=f"{NAME}.safetensors", adapter_name=NAME)
    with torch.no_grad():
        by_shipped = encode(pipe.tokenizer, pipe.text_encoder, captions)
        by_remade = encode(pipe.tokenizer, remade, captions)
        pipe.disable_lora()
        by_base = encode(pipe.tokenizer, pipe.text_encoder, captions)
    # Same meaning, allowing for another CPU's rounding: far closer to each other than to the encoder without it.
    assert _rms(by_shipped - by_base) > 0.1
    assert _rms(by_shipped - by_remade) < 0.01, (_rms(by_shipped - by_remade), _rms(by_shipped - by_base))


def _rms(difference: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean(difference**2)))
