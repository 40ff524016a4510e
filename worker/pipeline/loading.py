"""Loading `IMAGEGEN_MODEL`: a hub id, a local diffusers folder, a single-file checkpoint, `tiny` or `demo`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from core.settings import Settings
from worker.pipeline.acceleration import apply_runtime_options
from worker.pipeline.families import family_adapter
from worker.pipeline.safety import attach_safety_checker, loading_options
from worker.pipeline.tiny import ensure_tiny_pipeline

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = {".safetensors", ".ckpt"}
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline resident on its device, with where it came from."""

    pipeline: DiffusionPipeline
    source: str
    device: torch.device
    dtype: torch.dtype


def pick_device(setting: str | None) -> torch.device:
    """The configured device, else CUDA when present, else CPU."""
    if setting:
        return torch.device(setting)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(setting: str | None, device: torch.device) -> torch.dtype:
    """The configured dtype, else float16 on CUDA and float32 elsewhere."""
    if setting:
        return _DTYPES[setting]
    return torch.float16 if device.type == "cuda" else torch.float32


# The trained demo model ships inside the package (tools/train_demo_model.py made it).
DEMO_MODEL_DIR = Path(__file__).parent.parent / "models" / "demo"


def resolve_source(model: str, cache_dir: Path) -> str:
    """What `from_pretrained` / `from_single_file` should open for `model`."""
    if model == "tiny":
        return str(ensure_tiny_pipeline(cache_dir))
    if model == "demo":
        if not (DEMO_MODEL_DIR / "model_index.json").exists():
            raise FileNotFoundError(
                f"the demo model is missing from {DEMO_MODEL_DIR}; train it with tools/train_demo_model.py"
            )
        return str(DEMO_MODEL_DIR)
    return model


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured model onto its device, ready to generate."""
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    source = resolve_source(settings.model, settings.cache_dir)
    path = Path(source).expanduser()
    log.info("loading model %s from %s on %s as %s", settings.model, source, device, dtype)
    diffusers_logging.disable_progress_bar()  # progress belongs in job events and metrics, not on stderr
    pipeline: DiffusionPipeline
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        # A single file has no model_index.json to say its class: the models file's family does.
        single_file_class = family_adapter(settings.model_family).pipeline_class
        pipeline = single_file_class.from_single_file(str(path), torch_dtype=dtype)
    else:
        pipeline = DiffusionPipeline.from_pretrained(
            str(path) if path.is_dir() else source, torch_dtype=dtype, **loading_options(settings.safety_checker)
        )
    pipeline = pipeline.to(device)
    if settings.safety_checker:
        attach_safety_checker(pipeline, settings.safety_checker_source, device, dtype)
    pipeline.set_progress_bar_config(disable=True)
    apply_runtime_options(pipeline, device, settings)
    return LoadedModel(pipeline=pipeline, source=source, device=device, dtype=dtype)
