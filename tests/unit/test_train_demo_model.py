"""The training script of the demo model stays runnable: a smoke run of a few steps writes a loadable pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from diffusers import StableDiffusionPipeline

from tools.train_demo_model import VOCABULARY, Config, build_t5_tokenizer, train, train_flow, write_word_tokenizer
from worker.pipeline.loading import DEMO_MODEL_DIR


def test_word_tokenizer_makes_known_words_one_token(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    write_word_tokenizer(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path), model_max_length=16)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    ids = tokenizer("a red circle on a blue background").input_ids
    assert ids[1:-1] == [vocab[f"{word}</w>"] for word in ["a", "red", "circle", "on", "a", "blue", "background"]]
    assert {f"{word}</w>" for word in VOCABULARY} <= set(vocab)
    assert len(tokenizer("a zebra").input_ids) > 4  # unknown words fall back to bytes


def test_smoke_run_writes_a_pipeline_plain_diffusers_loads(tmp_path: Path) -> None:
    out = train(tmp_path / "demo", Config.smoke())
    pipeline = StableDiffusionPipeline.from_pretrained(str(out))
    assert pipeline.vae_scale_factor == 8
    assert type(pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    image = pipeline("a red circle on a blue background", num_inference_steps=2, height=64, width=64).images[0]
    assert image.size == (64, 64)


def test_the_script_writes_the_committed_models_tokenizer(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    write_word_tokenizer(tmp_path)
    written = CLIPTokenizer.from_pretrained(str(tmp_path), model_max_length=16)
    committed = CLIPTokenizer.from_pretrained(str(DEMO_MODEL_DIR / "tokenizer"))
    for text in [*VOCABULARY, "a red triangle on a white background", "a zebra"]:
        assert written(text).input_ids == committed(text).input_ids, text


def test_t5_tokenizer_makes_known_words_one_token() -> None:
    tokenizer = build_t5_tokenizer()
    assert tokenizer.tokenize("a yellow triangle on a white background") == [
        f"\u2581{word}" for word in ["a", "yellow", "triangle", "on", "a", "white", "background"]
    ]
    assert tokenizer.model_max_length == 16


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "model_index.json").exists(), reason="demo-flow reuses demo's VAE and CLIP")
def test_flow_smoke_run_writes_a_flux_pipeline_plain_diffusers_loads(tmp_path: Path) -> None:
    from diffusers import FluxPipeline

    out = train_flow(tmp_path / "demo-flow", Config.smoke(), DEMO_MODEL_DIR)
    pipeline = FluxPipeline.from_pretrained(str(out))
    assert pipeline.transformer.config.in_channels == 16  # demo's 4 latent channels, packed 2x2
    assert pipeline.vae.config.shift_factor == 0.0
    image = pipeline(
        "a red circle on a blue background",
        negative_prompt="",
        true_cfg_scale=4.0,
        num_inference_steps=2,
        height=64,
        width=64,
        max_sequence_length=16,
    ).images[0]
    assert image.size == (64, 64)
