"""Make `colour-swap`, the LoRA adapter for `demo` that the README's LoRA example uses.

The adapter lives in the demo's text encoder (rank-8 LoRA on its attention and MLP projections) and swaps the
palette's pairs, red <-> blue, green <-> yellow, white <-> black: with it at scale 1, "a red circle on a blue
background" draws a blue circle on a red background. It is distilled, not trained on pictures: for captions in the
forms the demo was trained on (`tools/train_demo_model.py`), the adapted encoder learns to give what the plain encoder
gives for the caption with its colours swapped (mean squared error over every token's output). Captions without
colour words, the empty one (classifier-free guidance's) included, keep their encoding. It takes under a minute on
one CPU thread, seeded; the result is saved as diffusers' `save_lora_weights` writes it, which the worker's
`load_lora_weights` reads (`worker/pipeline/loras.py`).

    python tools/make_demo_lora.py                      # writes worker/models/demo-loras/colour-swap.safetensors
    python tools/make_demo_lora.py --out /tmp/loras     # elsewhere
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: `tools` is importable from the repository root
    sys.path.insert(0, str(ROOT))

from tools.train_demo_model import CAPTION_FORMS, COLOURS, SHAPES  # noqa: E402

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

DEMO_DIR = ROOT / "worker" / "models" / "demo"
LORA_DIR = ROOT / "worker" / "models" / "demo-loras"
NAME = "colour-swap"
PAIRS = (("red", "blue"), ("green", "yellow"), ("white", "black"))
SWAP: dict[str, str] = {one: other for pair in PAIRS for one, other in (pair, pair[::-1])}
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


@dataclass
class Config:
    """Size and schedule of the distillation."""

    rank: int = 8
    steps: int = 400
    lr: float = 5e-3
    seed: int = 0


def swap_colours(caption: str) -> str:
    """`caption` with every palette word replaced by its pair (`SWAP`); other words unchanged."""
    return " ".join(SWAP.get(word, word) for word in caption.split(" "))


def all_captions() -> list[str]:
    """Every distinct caption the demo was trained on: `CAPTION_FORMS` over palette and shapes, and the empty one."""
    filled = {
        form.format(shape=shape, fg=foreground, bg=background)
        for form, _ in CAPTION_FORMS
        for shape in SHAPES
        for foreground in COLOURS
        for background in COLOURS
        if foreground != background
    }
    return ["", *sorted(filled)]


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids of `captions` as the Stable Diffusion pipeline makes them (padded to the model's length)."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode(tokenizer: CLIPTokenizer, text_encoder: torch.nn.Module, captions: list[str]) -> torch.Tensor:
    """Every token's output for `captions` (no attention mask, as the pipeline calls the encoder)."""
    return text_encoder(tokenize(tokenizer, captions))[0]


def distil(config: Config, demo_dir: Path = DEMO_DIR) -> CLIPTextModel:
    """The demo's text encoder with a `colour-swap` adapter fitted to the swapped captions; returns it."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(config.seed)
    tokenizer = CLIPTokenizer.from_pretrained(demo_dir / "tokenizer")
    teacher = CLIPTextModel.from_pretrained(demo_dir / "text_encoder").eval()
    student = CLIPTextModel.from_pretrained(demo_dir / "text_encoder").eval()
    student.requires_grad_(False)
    # PEFT's own injection: transformers' `add_adapter` asks for a newer PEFT than the worker needs.
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES
    )
    inject_adapter_in_model(lora, student)
    captions = all_captions()  # 169: every step sees all of them
    with torch.no_grad():
        target = encode(tokenizer, teacher, [swap_colours(caption) for caption in captions])
    ids = tokenize(tokenizer, captions)
    parameters = [parameter for parameter in student.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps, eta_min=config.lr * 0.05)
    started = time.monotonic()
    for step in range(1, config.steps + 1):
        loss = F.mse_loss(student(ids)[0], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == config.steps:
            print(
                f"step {step:>5}/{config.steps} loss {loss.item():.5f} ({time.monotonic() - started:.0f}s)", flush=True
            )
    return student


def save(text_encoder: torch.nn.Module, out: Path) -> Path:
    """Write the adapter of `text_encoder` as `<out>/colour-swap.safetensors`, in diffusers' LoRA format."""
    from diffusers import StableDiffusionPipeline

    out.mkdir(parents=True, exist_ok=True)
    # PEFT's key spelling without the adapter's name, as `get_peft_model_state_dict` gives it.
    layers = {
        key.replace(".default.", "."): value.detach().contiguous()
        for key, value in text_encoder.state_dict().items()
        if ".lora_" in key
    }
    StableDiffusionPipeline.save_lora_weights(
        str(out), text_encoder_lora_layers=layers, weight_name=f"{NAME}.safetensors"
    )
    return out / f"{NAME}.safetensors"


def main(argv: list[str] | None = None) -> int:
    """Distil the adapter and save it; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=LORA_DIR, help="folder for colour-swap.safetensors")
    parser.add_argument("--steps", type=int, default=Config.steps)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # reproducible for a given torch build
    path = save(distil(Config(steps=args.steps)), args.out)
    print(f"saved {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
