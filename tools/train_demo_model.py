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

`--family flux` trains `demo-flow` instead, on the same pictures and captions: it reuses `demo`'s VAE, CLIP text
encoder and tokenizer (frozen, read from `--demo`), and trains a toy `FluxTransformer2DModel` jointly with a small
`T5EncoderModel` over a word-level T5 tokenizer, on the rectified-flow objective; it saves a `FluxPipeline` folder.
Seeded and reproducible for a given torch build and thread count.

    python tools/train_demo_model.py --out worker/models/demo              # the full run
    python tools/train_demo_model.py --out worker/models/demo-flow --family flux --threads 1
    python tools/train_demo_model.py --out /tmp/demo --smoke                # a few steps, to keep the script tested
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
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
    # demo-flow (`--family flux`): the transformer's steps, batch and learning rate.
    flow_steps: int = 3000
    flow_batch: int = 64
    flow_lr: float = 5e-4
    # Every this many steps, save the pipeline so far next to `out` (`<out>-step<N>`), to evaluate a long run while
    # it trains; 0: only at the end.
    save_every: int = 0

    @classmethod
    def smoke(cls) -> Config:
        return cls(images=256, vae_steps=3, vae_batch=8, unet_steps=3, unet_batch=8, flow_steps=3, flow_batch=8)


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


def warmup_cosine(total: int) -> Callable[[int], float]:
    """The learning-rate factor of step `step` of `total`: linear warm-up over 5 %, then cosine decay to 10 %."""
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


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
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.unet_steps))
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


# --- demo-flow: a FLUX-style transformer on the rectified-flow objective ------------------------------------------


def build_t5_tokenizer():
    """A T5 tokenizer to which each vocabulary word is one token (other text: single characters), 16 tokens long."""
    from worker.pipeline.tiny import t5_tokenizer

    return t5_tokenizer(MAX_TOKENS, words=tuple(VOCABULARY))


def build_t5_encoder(tokenizer):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def build_flux_transformer():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # demo's 4 latent channels x FLUX's 2x2 packing: 16 image tokens at 64x64
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=64,  # the T5's width
        pooled_projection_dim=64,  # the CLIP's width (its pooled output)
        guidance_embeds=False,  # trained with real classifier-free guidance (true_cfg_scale), not distilled
        axes_dims_rope=(8, 12, 12),  # sums to the head width
    )


def train_flow(out: Path, config: Config, demo: Path) -> Path:
    """demo-flow: `demo`'s VAE, CLIP encoder and tokenizer (frozen), a toy FLUX transformer and a small T5 trained
    together on the rectified-flow objective (x_t = (1 - t) x0 + t noise, target noise - x0, t ~ U(0, 1), the
    timestep fed as FluxPipeline feeds it: sigma in [0, 1]); saves a `FluxPipeline` into `out`."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    from worker.pipeline.tiny import FLUX_SCHEDULER_CONFIG

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)

    pixels, labels = make_dataset(config.images, config.seed)
    vae = AutoencoderKL.from_pretrained(str(demo / "vae")).eval()
    vae.register_to_config(shift_factor=0.0)  # FluxPipeline reads it; demo's latents are scaled, not shifted
    clip_tokenizer = CLIPTokenizer.from_pretrained(str(demo / "tokenizer"))
    clip = CLIPTextModel.from_pretrained(str(demo / "text_encoder")).eval().requires_grad_(False)
    t5_tokenizer = build_t5_tokenizer()
    t5 = build_t5_encoder(t5_tokenizer)
    transformer = build_flux_transformer()

    means, stds = encode_all(vae.requires_grad_(False), pixels)
    scaling = vae.config.scaling_factor
    means, stds = means * scaling, stds * scaling
    channels, height, width = means.shape[1:]
    image_ids = FluxPipeline._prepare_latent_image_ids(1, height // 2, width // 2, "cpu", torch.float32)
    text_ids = torch.zeros(MAX_TOKENS, 3)
    print(f"latents {tuple(means.shape)}, demo's scaling factor {scaling:.4f}", flush=True)

    pooled_cache: dict[str, torch.Tensor] = {}  # the frozen CLIP's pooled output of each caption seen

    @torch.no_grad()
    def pooled(captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in pooled_cache})
        if missing:
            ids = clip_tokenizer(missing, padding="max_length", max_length=MAX_TOKENS, truncation=True)
            outputs = clip(torch.tensor(ids.input_ids)).pooler_output
            pooled_cache.update(zip(missing, outputs, strict=True))
        return torch.stack([pooled_cache[c] for c in captions])

    def save(folder: Path) -> Path:
        # FLUX.1's own scheduler config: its dynamic shift gives mu 0.46 (shift 1.58) for 16 image tokens at 64x64.
        pipeline = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER_CONFIG),
            vae=vae,
            text_encoder=clip,
            tokenizer=clip_tokenizer,
            text_encoder_2=t5,
            tokenizer_2=t5_tokenizer,
            transformer=transformer,
        )
        folder.mkdir(parents=True, exist_ok=True)
        pipeline.save_pretrained(str(folder), safe_serialization=True)
        print(f"saved to {folder}", flush=True)
        return folder

    parameters = [*transformer.parameters(), *t5.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.flow_lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.flow_steps))
    generator = torch.Generator().manual_seed(config.seed + 1)
    captions_rng = random.Random(config.seed + 2)
    started = time.monotonic()
    running = None
    for step in range(1, config.flow_steps + 1):
        index = torch.randint(len(means), (config.flow_batch,), generator=generator)
        batch = len(index)
        clean = means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)
        captions = [training_caption(labels[i], captions_rng) for i in index.tolist()]
        # Tokenized as FluxPipeline does it (max_length padding, no attention mask), at the worker's length (16).
        t5_ids = t5_tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True).input_ids
        states = t5(torch.tensor(t5_ids))[0]
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.rand(batch, generator=generator)
        noisy = (1 - t.view(-1, 1, 1, 1)) * clean + t.view(-1, 1, 1, 1) * noise
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        target = FluxPipeline._pack_latents(noise - clean, batch, channels, height, width)
        prediction = transformer(
            hidden_states=packed,
            timestep=t,
            pooled_projections=pooled(captions),
            encoder_hidden_states=states,
            txt_ids=text_ids,
            img_ids=image_ids,
        ).sample
        loss = F.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == config.flow_steps:
            _log("flow", step, config.flow_steps, running, started)
        if config.save_every and step % config.save_every == 0 and step < config.flow_steps:
            save(out.with_name(f"{out.name}-step{step}"))

    return save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="a few steps of each stage (keeps the script tested)")
    parser.add_argument("--unet-steps", type=int)
    parser.add_argument("--vae-steps", type=int)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--family", choices=("sd15", "flux"), default="sd15", help="sd15: `demo`; flux: `demo-flow` (needs --demo)"
    )
    parser.add_argument("--demo", type=Path, help="demo's folder, whose VAE and CLIP demo-flow reuses")
    parser.add_argument("--flow-steps", type=int)
    parser.add_argument("--save-every", type=int, default=0, help="flux: save the pipeline every N steps too")
    args = parser.parse_args()
    config = Config.smoke() if args.smoke else Config()
    if args.unet_steps:
        config.unet_steps = args.unet_steps
    if args.vae_steps:
        config.vae_steps = args.vae_steps
    if args.flow_steps:
        config.flow_steps = args.flow_steps
    config.threads = args.threads
    config.save_every = args.save_every
    if args.family == "flux":
        from worker.pipeline.loading import DEMO_MODEL_DIR

        train_flow(args.out, config, args.demo or DEMO_MODEL_DIR)
    else:
        train(args.out, config)


if __name__ == "__main__":
    main()
