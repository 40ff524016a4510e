"""Loading `IMAGEGEN_MODEL`: a hub id, a local diffusers folder, a single-file checkpoint, a model built in code
(`tiny`, `tiny-flux`, `tiny-sd3`, `tiny-qwen-image`) or a shipped demo model (`demo`, `demo-flow`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from core.settings import Settings
from worker.pipeline.acceleration import apply_runtime_options
from worker.pipeline.families import family_adapter, family_by_class_name
from worker.pipeline.safety import attach_safety_checker, loading_options
from worker.pipeline.tiny import TINY_MODELS, ensure_tiny_model

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


def pick_dtype(setting: str | None, device: torch.device, family: str | None = None) -> torch.dtype:
    """The configured dtype, else on CUDA the family's (bfloat16 for FLUX, SD3 and Qwen-Image, whose T5 overflows
    in float16; float16 for the SD line and unknown families), and float32 elsewhere."""
    if setting:
        return _DTYPES[setting]
    return family_adapter(family).cuda_dtype if device.type == "cuda" else torch.float32


def declared_family(source: str, configured: str | None) -> str | None:
    """The family a model will load as, before loading it: the pipeline class its model_index.json names (a local
    folder, or the hub's small config file), else the configured one (a models-file entry; single files)."""
    path = Path(source).expanduser()
    if path.is_file():
        return configured
    try:
        config = DiffusionPipeline.load_config(str(path) if path.is_dir() else source)
    except (OSError, ValueError):
        return configured
    return family_by_class_name(config.get("_class_name")) or configured


# The trained demo models ship inside the package (tools/train_demo_model.py made them): name → folder.
DEMO_MODEL_DIR = Path(__file__).parent.parent / "models" / "demo"
DEMO_FLOW_MODEL_DIR = DEMO_MODEL_DIR.parent / "demo-flow"
DEMO_MODELS = {"demo": DEMO_MODEL_DIR, "demo-flow": DEMO_FLOW_MODEL_DIR}


def resolve_source(model: str, cache_dir: Path) -> str:
    """What `from_pretrained` / `from_single_file` should open for `model`."""
    if model in TINY_MODELS:
        return str(ensure_tiny_model(model, cache_dir))
    if model in DEMO_MODELS:
        folder = DEMO_MODELS[model]
        if not (folder / "model_index.json").exists():
            raise FileNotFoundError(
                f"the {model} model is missing from {folder}; train it with tools/train_demo_model.py"
            )
        return str(folder)
    return model


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured model onto its device, ready to generate."""
    device = pick_device(settings.device)
    source = resolve_source(settings.model, settings.cache_dir)
    # Only CUDA's default dtype depends on the family (the CPU runs float32 whatever it is).
    family = declared_family(source, settings.model_family) if device.type == "cuda" and not settings.dtype else None
    dtype = pick_dtype(settings.dtype, device, family)
    path = Path(source).expanduser()
    log.info("loading model %s from %s on %s as %s", settings.model, source, device, dtype)
    diffusers_logging.disable_progress_bar()  # progress belongs in job events and metrics, not on stderr
    pipeline: DiffusionPipeline
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        # A single file has no model_index.json to say its class: the models file's family does.
        single_file_class = family_adapter(settings.model_family).pipeline_class
        if not hasattr(single_file_class, "from_single_file"):  # Qwen-Image in diffusers 0.42
            raise ValueError(
                f"family {settings.model_family}: diffusers loads no single-file checkpoint of it; "
                "give a diffusers folder or a hub id"
            )
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
