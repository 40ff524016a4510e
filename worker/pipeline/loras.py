"""LoRA adapters from local files (`<name>.safetensors` in `IMAGEGEN_LORA_DIR`), applied to the resident pipeline for
one batch and switched off after it.

An adapter is loaded into the pipeline the first time a job asks for it and stays loaded (PEFT layers), inactive
between batches: with adapters disabled, PEFT's layers compute exactly their base layer, so a plain job after a LoRA
job gives the same pixels as before any LoRA was loaded (tested), and no weights are merged or unmerged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from diffusers import DiffusionPipeline

from core.schemas import LoraSpec

log = logging.getLogger(__name__)

LORA_SUFFIX = ".safetensors"


def available_loras(folder: Path | None) -> list[str]:
    """Names of the adapters in `folder` (file stems), sorted; none when no folder is configured."""
    if folder is None or not folder.expanduser().is_dir():
        return []
    return sorted(path.stem for path in folder.expanduser().glob(f"*{LORA_SUFFIX}") if path.is_file())


class LoraAdapters:
    """The LoRA state of one resident pipeline."""

    def __init__(self, pipeline: DiffusionPipeline, folder: Path | None) -> None:
        self.pipeline = pipeline
        self.folder = folder.expanduser() if folder is not None else None
        self.loaded: set[str] = set()

    def check(self, loras: Sequence[LoraSpec]) -> None:
        """Raise ValueError naming any adapter this worker does not have."""
        if not loras:  # most jobs: no folder listing on their way in
            return
        have = available_loras(self.folder)
        missing = [lora.name for lora in loras if lora.name not in have]
        if missing:
            offered = ", ".join(have) or "none"
            raise ValueError(f"loras: unknown adapter {', '.join(missing)}; this worker has: {offered}")

    @contextmanager
    def applied(self, loras: Sequence[LoraSpec]) -> Iterator[None]:
        """Within the block the pipeline runs with exactly `loras` at their scales; after it, with none."""
        if not loras:
            yield
            return
        if self.folder is None:  # admission checked the names against the folder (`check`)
            raise ValueError("loras: this worker has no LoRA folder (IMAGEGEN_LORA_DIR)")
        for lora in loras:
            if lora.name not in self.loaded:
                log.info("loading LoRA adapter %s", lora.name)
                self.pipeline.load_lora_weights(
                    str(self.folder), weight_name=lora.name + LORA_SUFFIX, adapter_name=lora.name
                )
                self.loaded.add(lora.name)
        self.pipeline.enable_lora()
        self.pipeline.set_adapters([lora.name for lora in loras], adapter_weights=[lora.scale for lora in loras])
        try:
            yield
        finally:
            self.pipeline.disable_lora()
