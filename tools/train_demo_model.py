"""Train `demo`: a small latent-diffusion model that draws what simple prompts say, from a data set made in code.

Pictures are 64x64: one shape (circle, square, triangle) of one colour on a background of another (red, green, blue,
yellow, white, black), captioned "a red circle on a blue background". The script trains, in order:

1. a small `AutoencoderKL` (f=8: 64x64x3 pixels <-> 8x8x4 latents), then caches the latents of the data set once;
2. a small `UNet2DConditionModel` jointly with a small `CLIPTextModel`, over a word-level `CLIPTokenizer` the script
   writes (vocabulary and merges), on a fresh posterior sample of each cached latent every step, with captions that
   leave parts out (`CAPTION_FORMS`: "a circle on a blue background", "a red circle", "red", ...) so that an
   under-specified prompt spreads over what it leaves open and single words work as negative prompts, and 10 %
   empty captions for classifier-free guidance;

and saves a `StableDiffusionPipeline` folder (safetensors) that loads with `from_pretrained` on its own.
Seeded and reproducible for a given torch build and thread count.

    python tools/train_demo_model.py --out worker/models/demo              # the full run
    python tools/train_demo_model.py --out /tmp/demo --smoke                # a few steps, to keep the script tested
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
SIZE = 64
EMPTY_CAPTION_SHARE = 0.1
# Caption forms drawn for each training sample (with these weights; the rest, EMPTY_CAPTION_SHARE, is empty).
# The partial forms teach the model what a prompt leaves open: "a circle on a blue background" draws any foreground
# colour, so the image itself (img2img) or a negative prompt ("green") decides it.
CAPTION_FORMS: tuple[tuple[str, float], ...] = (
    ("a {fg} {shape} on a {bg} background", 0.55),
    ("a {shape} on a {bg} background", 0.10),
    ("a {fg} {shape}", 0.10),
    ("a {fg} shape on a {bg} background", 0.05),
    ("a {bg} background", 0.05),
    ("{fg}", 0.05),
)
MAX_TOKENS = 16
# Words the tokenizer knows as whole tokens; anything else falls back to single bytes.
VOCABULARY = sorted({*COLOURS, *SHAPES, "a", "an", "on", "the", "background", "of", "and", "with", "shape"})


@dataclass
class Config:
    """Sizes and schedule of a training run."""

    images: int = 24000
    vae_steps: int = 800
    vae_batch: int = 16
    vae_lr: float = 1e-3
    unet_steps: int = 3500
    unet_batch: int = 64
    unet_lr: float = 5e-4
    seed: int = 0
    threads: int = 0

    @classmethod
    def smoke(cls) -> Config:
        return cls(images=256, vae_steps=3, vae_batch=8, unet_steps=3, unet_batch=8)


# --- data -------------------------------------------------------------------------------------------------------


def draw(shape: str, foreground: str, background: str, rng: random.Random) -> Image.Image:
    """One picture: `shape` in `foreground` on `background`, at a random place and size (fully inside)."""
    image = Image.new("RGB", (SIZE, SIZE), COLOURS[background])
    pen = ImageDraw.Draw(image)
    side = rng.randint(22, 40)
    x0 = rng.randint(4, SIZE - 4 - side)
    y0 = rng.randint(4, SIZE - 4 - side)
    box = (x0, y0, x0 + side, y0 + side)
    fill = COLOURS[foreground]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(x0 + side / 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=fill)
    return image


def caption(shape: str, foreground: str, background: str) -> str:
    """The caption of a picture."""
    return f"a {foreground} {shape} on a {background} background"


def training_caption(labels: tuple[str, str, str], rng: random.Random) -> str:
    """A caption for a picture with `labels` (shape, foreground, background), in a form drawn from CAPTION_FORMS."""
    shape, foreground, background = labels
    forms, weights = zip(*CAPTION_FORMS, strict=True)
    pick = rng.random()
    if pick < EMPTY_CAPTION_SHARE:
        return ""
    form = rng.choices(forms, weights=weights)[0]
    return form.format(shape=shape, fg=foreground, bg=background)


def make_dataset(count: int, seed: int) -> tuple[torch.Tensor, list[tuple[str, str, str]]]:
    """`count` pictures as a uint8 tensor (n, 3, 64, 64) and their labels (shape, foreground, background)."""
    rng = random.Random(seed)
    pixels = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    labels = []
    names = list(COLOURS)
    for i in range(count):
        shape = rng.choice(SHAPES)
        foreground, background = rng.sample(names, 2)
        pixels[i] = np.asarray(draw(shape, foreground, background, rng))
        labels.append((shape, foreground, background))
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels


# --- tokenizer --------------------------------------------------------------------------------------------------


def write_word_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer whose merges build each vocabulary word into one token (other text: single bytes)."""
    from worker.pipeline.tiny import write_byte_level_clip_tokenizer

    write_byte_level_clip_tokenizer(folder)
    vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges: list[str] = []
    for word in VOCABULARY:
        pieces = [*word[:-1], word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = f"{current} {piece}"
            if merge not in merges:
                merges.append(merge)
            current += piece
            vocab.setdefault(current, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


# --- models -----------------------------------------------------------------------------------------------------


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    )


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=MAX_TOKENS,
            projection_dim=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=4,
        norm_num_groups=32,
    )


# --- training ---------------------------------------------------------------------------------------------------


def _log(stage: str, step: int, total: int, loss: float, started: float) -> None:
    print(f"{stage} {step:>5}/{total} loss {loss:.4f} ({time.monotonic() - started:.0f}s)", flush=True)


def train_vae(pixels: torch.Tensor, config: Config):
    """Fit the autoencoder: reconstruction MSE plus a very small KL term."""
    vae = build_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.monotonic()
    for step in range(1, config.vae_steps + 1):
        index = torch.randint(len(pixels), (config.vae_batch,), generator=generator)
        batch = pixels[index].float() / 127.5 - 1
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        loss = F.mse_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == config.vae_steps:
            _log("vae", step, config.vae_steps, F.mse_loss(reconstruction, batch).item(), started)
    return vae.eval()


@torch.no_grad()
def encode_all(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mean and std of every picture's latent, unscaled."""
    means, stds = [], []
    for i in range(0, len(pixels), 256):
        posterior = vae.encode(pixels[i : i + 256].float() / 127.5 - 1).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(means: torch.Tensor, stds: torch.Tensor, labels: list[tuple[str, str, str]], tokenizer, config: Config):
    """Train the UNet and the text encoder together on epsilon prediction.

    Each step draws a fresh posterior sample of each (scaled) cached latent, as img2img's encode does at inference,
    and a caption form per picture (`training_caption`), 10 % of them empty."""
    from diffusers import DDPMScheduler

    from worker.pipeline.tiny import SD15_SCHEDULER_CONFIG

    noise_schedule = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    unet, text_encoder = build_unet(), build_text_encoder(tokenizer)
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.unet_lr, weight_decay=1e-2)
    warmup = max(1, config.unet_steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 10 %
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.unet_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(config.seed + 1)
    captions_rng = random.Random(config.seed + 2)
    started = time.monotonic()
    running = None
    for step in range(1, config.unet_steps + 1):
        index = torch.randint(len(means), (config.unet_batch,), generator=generator)
        clean = means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)
        captions = [training_caption(labels[i], captions_rng) for i in index.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
        ids = ids.input_ids
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = noise_schedule.add_noise(clean, noise, timesteps)
        states = text_encoder(ids)[0]
        prediction = unet(noisy, timesteps, encoder_hidden_states=states).sample
        loss = F.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == config.unet_steps:
            _log("unet", step, config.unet_steps, running, started)
    return unet.eval(), text_encoder.eval()


def train(out: Path, config: Config) -> Path:
    """The whole run: data, VAE, cached latents, UNet and text encoder; saves the pipeline into `out`."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTokenizer

    from worker.pipeline.tiny import SD15_SCHEDULER_CONFIG, assemble_sd_pipeline

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)

    pixels, labels = make_dataset(config.images, config.seed)
    with tempfile.TemporaryDirectory() as scratch:
        write_word_tokenizer(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(scratch, model_max_length=MAX_TOKENS)

    vae = train_vae(pixels, config)
    means, stds = encode_all(vae, pixels)
    scaling = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    means, stds = means * scaling, stds * scaling
    print(f"latents {tuple(means.shape)}, scaling factor {scaling:.4f}, posterior std {stds.mean():.3f}", flush=True)

    unet, text_encoder = train_unet(means, stds, labels, tokenizer, config)
    tokenizer.backend_tokenizer.no_truncation()  # the training calls' truncation state is not part of the model
    # SD 1.5's noise schedule with Euler as the default sampler: PNDM, SD 1.5's own default, draws blobs with this
    # small model at 20 steps (3 of 24 prompts right), while DDIM, Euler, Euler a and DPM++ 2M get 24 of 24.
    scheduler = EulerDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG)
    pipeline = assemble_sd_pipeline(vae, text_encoder, tokenizer, unet, scheduler)
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(str(out), safe_serialization=True)
    print(f"saved to {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="a few steps of each stage (keeps the script tested)")
    parser.add_argument("--unet-steps", type=int)
    parser.add_argument("--vae-steps", type=int)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    config = Config.smoke() if args.smoke else Config()
    if args.unet_steps:
        config.unet_steps = args.unet_steps
    if args.vae_steps:
        config.vae_steps = args.vae_steps
    config.threads = args.threads
    train(args.out, config)


if __name__ == "__main__":
    main()
