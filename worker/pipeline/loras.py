"""LoRA adapters from local files (`<name>.safetensors` in `IMAGEGEN_LORA_DIR`), applied to the resident pipeline for
one batch and switched off after it.

An adapter is loaded into the pipeline the first time a job asks for it and stays loaded (PEFT layers), inactive
between batches: with adapters disabled, PEFT's layers compute exactly their base layer, so a plain job after a LoRA
job gives the same pixels as before any LoRA was loaded (tested), and no weights are merged or unmerged.

Each family's pipelines load LoRA files through their own diffusers loader, named by the family adapter
(`FamilyAdapter.lora_loader`: the SD line's UNet loaders, `FluxLoraLoaderMixin`, `SD3LoraLoaderMixin`,
`QwenImageLoraLoaderMixin` for the transformer families); a model whose pipeline lacks it refuses LoRA jobs at
admission, and a file with nothing that loader takes (a LoRA made for another family) fails its job plainly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from diffusers import DiffusionPipeline

from core.schemas import LoraSpec
from worker.pipeline.families import detect_family, family_adapter

log = logging.getLogger(__name__)

LORA_SUFFIX = ".safetensors"


def available_loras(folder: Path | None) -> list[str]:
    """Names of the adapters in `folder` (file stems), sorted; none when no folder is configured."""
    if folder is None or not folder.expanduser().is_dir():
        return []
    return sorted(path.stem for path in folder.expanduser().glob(f"*{LORA_SUFFIX}") if path.is_file())


class LoraAdapters:
    """The LoRA state of one resident pipeline."""

    def __init__(self, pipeline: DiffusionPipeline, folder: Path | None, family: str | None = None) -> None:
        """`family`: the model's (detected from the pipeline's class when not given), whose adapter names the loader."""
        self.pipeline = pipeline
        self.folder = folder.expanduser() if folder is not None else None
        self.loaded: set[str] = set()
        self.loader = family_adapter(detect_family(pipeline, family)).lora_loader

    @property
    def supported(self) -> bool:
        """Whether this model's pipeline loads LoRA files (it has its family's diffusers loader)."""
        return self.loader is not None and isinstance(self.pipeline, self.loader)

    def check(self, loras: Sequence[LoraSpec]) -> None:
        """Raise ValueError for LoRA adapters on a model that takes none, or naming any this worker does not have."""
        if not loras:  # most jobs: no folder listing on their way in
            return
        self._refuse_unsupported()
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
        self._refuse_unsupported()
        try:  # a load that fails part-way leaves the adapters loaded before it switched off too
            for lora in loras:
                if lora.name not in self.loaded:
                    self._load(lora.name)
            self.pipeline.enable_lora()
            self.pipeline.set_adapters([lora.name for lora in loras], adapter_weights=[lora.scale for lora in loras])
            yield
        finally:
            self.pipeline.disable_lora()

    def _refuse_unsupported(self) -> None:
        """Raise ValueError when this model's pipeline has no LoRA loader."""
        if not self.supported:
            raise ValueError(
                f"loras: this model ({type(self.pipeline).__name__}) takes no LoRA adapters: "
                "diffusers has no LoRA loader for its pipeline"
            )

    def _load(self, name: str) -> None:
        """Load `<name>.safetensors` through the family's loader as the adapter `name`."""
        log.info("loading LoRA adapter %s", name)
        self.pipeline.load_lora_weights(str(self.folder), weight_name=name + LORA_SUFFIX, adapter_name=name)
        if name not in self._present():  # the loader skipped every key (it only logs that)
            raise ValueError(
                f"loras: {name}{LORA_SUFFIX} holds no weights {type(self.pipeline).__name__} takes "
                "(a LoRA made for another model family?)"
            )
        self.loaded.add(name)

    def _present(self) -> set[str]:
        """The adapters loaded into any of the pipeline's components."""
        listed = self.pipeline.get_list_adapters()
        return {name for names in listed.values() for name in names}
