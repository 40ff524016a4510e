"""Prompts longer than the text encoder's window (77 tokens for CLIP).

`truncate` (the default, what diffusers does): the encoder reads the first 75 tokens; the job gets a warning.
`chunk` (as AUTOMATIC1111 does): the tokens are split into windows of 75, each encoded on its own between BOS and EOS,
and the embeddings are concatenated along the sequence, which the UNet's cross-attention accepts at any length. The
prompt and negative prompt of a batch are padded with empty windows to the same count. Prompts that fit one window
take diffusers' own path in both modes, so their pixels do not change. Whether a pipeline may chunk is its family's
call (`FamilyAdapter.chunks_long_prompts`: SDXL's pooled embeddings have no chunked form, so it truncates); callers
pass `truncate` for those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline

LongPrompts = Literal["truncate", "chunk"]


def token_count(pipeline: DiffusionPipeline, text: str, tokenizer: Any = None) -> int:
    """Tokens of `text` with the special tokens the tokenizer adds, untruncated (`tokenizer`: the pipeline's
    first, unless given)."""
    tokenizer = tokenizer if tokenizer is not None else pipeline.tokenizer
    return len(tokenizer(text, truncation=False).input_ids) if text else 0


def needs_chunks(pipeline: DiffusionPipeline, texts: Sequence[str]) -> bool:
    """Whether any text is longer than the encoder's window."""
    window = pipeline.tokenizer.model_max_length
    return any(token_count(pipeline, text) > window for text in texts)


def _windows(pipeline: DiffusionPipeline, text: str) -> list[list[int]]:
    tokenizer = pipeline.tokenizer
    body = tokenizer.model_max_length - 2
    ids = tokenizer(text, truncation=False, add_special_tokens=False).input_ids if text else []
    return [ids[start : start + body] for start in range(0, max(len(ids), 1), body)]  # at least one window


@torch.no_grad()
def chunked_embeddings(pipeline: DiffusionPipeline, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """(len(texts), windows * 77, width) text embeddings, each text's windows encoded separately and concatenated;
    every text gets as many windows as the longest one (the extra ones empty)."""
    tokenizer, encoder = pipeline.tokenizer, pipeline.text_encoder
    window = tokenizer.model_max_length
    per_text = [_windows(pipeline, text) for text in texts]
    count = max(len(windows) for windows in per_text)
    rows = []
    for windows in per_text:
        for part in windows + [[]] * (count - len(windows)):
            row = [tokenizer.bos_token_id, *part, tokenizer.eos_token_id]
            rows.append(row + [tokenizer.pad_token_id] * (window - len(row)))
    ids = torch.tensor(rows, device=device)
    states = encoder(ids)[0]
    return states.reshape(len(texts), count * window, states.shape[-1]).to(pipeline.unet.dtype)


def prompt_arguments(
    pipeline: DiffusionPipeline,
    prompts: list[str],
    negatives: list[str],
    mode: LongPrompts,
    device: torch.device,
) -> dict[str, Any]:
    """The prompt arguments of a pipeline call: the texts themselves, or, in `chunk` mode (for a pipeline whose
    family chunks) when a text is too long for one window, chunked `prompt_embeds` and `negative_prompt_embeds` of
    one common length."""
    if mode == "chunk" and needs_chunks(pipeline, [*prompts, *negatives]):
        embeddings = chunked_embeddings(pipeline, [*prompts, *negatives], device)
        return {"prompt_embeds": embeddings[: len(prompts)], "negative_prompt_embeds": embeddings[len(prompts) :]}
    return {"prompt": prompts, "negative_prompt": negatives if any(negatives) else None}
