"""A stand-in for the resident pipeline that does no torch work: each denoising step sleeps `seconds_per_step`, then
calls the engine's step hook, and the images are small fixed pictures. The fleet benchmark (`bench/fleet.py`) runs
the real job runtime (engine, RQ loop, JobStore, heartbeat, sweeps) over it, so that only Redis and the runtime's own
bookkeeping are measured."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from PIL import Image

from core.events import PreviewEvent
from core.schemas import GenerateRequest, Provenance, Sampler
from worker.pipeline.generation import Inputs
from worker.pipeline.prompts import LongPrompts
from worker.pipeline.resident import Generation, ResidentPipeline, StepHook

# What a stand-in image is: small, so PNG encoding costs the fleet's CPU little (a real job's is off the GPU's path).
IMAGE_SIDE = 8


class SleepPipeline(ResidentPipeline):
    """`ResidentPipeline`'s methods the engine calls, with time passing instead of compute. Thread-safe: it keeps no
    state between calls."""

    family = "sd15"

    def __init__(self, seconds_per_step: float) -> None:
        """No model: the parent's loading is skipped on purpose."""
        self.seconds_per_step = seconds_per_step
        self._image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (90, 140, 200))

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def dtype(self) -> str:
        return "float16"

    def samplers(self) -> list[Sampler]:
        return list(Sampler)

    def loras(self) -> list[str]:
        return []

    def warm_up(self, steps: int) -> None:
        return None

    def admit(self, request: GenerateRequest, model_name: str) -> tuple[int, Provenance]:
        """Every request runs its `steps` steps."""
        provenance = Provenance(
            model=model_name,
            model_source="sleep",
            model_hash="0" * 64,
            scheduler="sleep",
            scheduler_config={},
            libraries={},
            device=self.device,
            dtype=self.dtype,
        )
        return request.steps, provenance

    def truncation_warnings(self, request: GenerateRequest, long_prompts: LongPrompts) -> list[str]:
        return []

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        on_step: StepHook | None = None,
        inputs: Sequence[Inputs] | None = None,
        long_prompts: LongPrompts = "truncate",
    ) -> Generation:
        """Sleep one step at a time (the batch shares each step, as on a GPU), reporting each to `on_step`."""
        total = requests[0].steps
        latents = torch.zeros(sum(r.num_images for r in requests), 4, 1, 1)
        step_seconds = []
        for step in range(1, total + 1):
            started = time.perf_counter()
            time.sleep(self.seconds_per_step)
            step_seconds.append(time.perf_counter() - started)
            if on_step is not None and on_step(step, total, latents):
                break
        images = [[self._image.copy() for _ in range(r.num_images)] for r in requests]
        return Generation(images, step_seconds, {"denoise": sum(step_seconds)})

    def preview(self, latents: torch.Tensor, step: int) -> PreviewEvent:
        return PreviewEvent(step=step, content_type="image/png", width=1, height=1, data="")

    def release_memory(self) -> None:
        return None
