"""`ResidentPipeline`: the loaded model and all that derives from it, the one door the job runtime uses to diffusers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from core.events import PreviewEvent
from core.schemas import GenerateRequest, GenerationMode, Provenance, Sampler
from core.settings import Settings
from worker.pipeline.acceleration import warm_up_request
from worker.pipeline.families import detect_family, family_adapter
from worker.pipeline.generation import Inputs, generate_batch, generate_images
from worker.pipeline.loading import LoadedModel, load_model
from worker.pipeline.loras import LoraAdapters, available_loras
from worker.pipeline.previews import preview_event
from worker.pipeline.prompts import LongPrompts, token_count
from worker.pipeline.provenance import model_fingerprint, provenance
from worker.pipeline.safety import FILTERED_INFO_KEY
from worker.pipeline.samplers import build_scheduler, denoising_iterations, sampler_runs, supported_samplers
from worker.pipeline.timing import DeviceClock, PipelineTimers

log = logging.getLogger(__name__)

# The latents of a batch at one step, (images, channels, height, width), as the step hook sees them.
Latents: TypeAlias = torch.Tensor
# Called after each denoising iteration with (iterations done, total, latents); returns True to stop the run.
StepHook = Callable[[int, int, Latents], bool]


@dataclass(frozen=True)
class Generation:
    """What one pipeline call made: each request's images, and the device time it took."""

    images: list[list[Image.Image]]
    step_seconds: list[float]  # each denoising iteration
    phase_seconds: dict[str, float]  # text_encode, denoise, vae_decode (those that ran)


class ResidentPipeline:
    """The model this worker keeps loaded, with its base scheduler config, family adapter, timers, LoRA state and
    fingerprint. Not thread-safe: one pipeline call at a time, from the worker's main thread."""

    def __init__(self, model: LoadedModel, *, family: str | None = None, lora_dir: Path | None = None) -> None:
        """Wrap a loaded model; `family`: the declared one (models file), checked against the pipeline's class."""
        self.model = model
        self.family = detect_family(model.pipeline, family)
        self.adapter = family_adapter(self.family)
        pipeline: Any = model.pipeline  # diffusers declares its components on the subclasses
        self.base_scheduler_config: dict[str, Any] = dict(pipeline.scheduler.config)
        self.fingerprint = model_fingerprint(model.source)
        self.lora_folder = lora_dir
        self._timers = PipelineTimers(model.pipeline, DeviceClock(model.device))
        self._lora_adapters = LoraAdapters(model.pipeline, lora_dir, self.family)
        self._admission: dict[tuple[Sampler, GenerationMode], SchedulerMixin | None] = {}

    @classmethod
    def load(cls, settings: Settings) -> ResidentPipeline:
        """Load the configured model onto its device (not yet warmed up)."""
        return cls(load_model(settings), family=settings.model_family, lora_dir=settings.lora_dir)

    @property
    def device(self) -> str:
        """The device the model runs on, e.g. `cuda:0` or `cpu`."""
        return str(self.model.device)

    @property
    def dtype(self) -> str:
        """The weights' dtype, e.g. `float16`."""
        return str(self.model.dtype).removeprefix("torch.")

    def samplers(self) -> list[Sampler]:
        """The samplers whose scheduler builds from this model's scheduler config."""
        return supported_samplers(self.base_scheduler_config, self.family)

    def loras(self) -> list[str]:
        """The LoRA adapters this worker offers (names); none when its model takes no LoRA (the API then refuses
        adapters with a 422 instead of the job failing here)."""
        return available_loras(self.lora_folder) if self._lora_adapters.supported else []

    def warm_up(self, steps: int) -> None:
        """One short generation of `steps` steps at the model's native size, so the first request pays no start-up
        cost (with `torch.compile` on, it compiles for that size); 0: none."""
        if steps == 0:
            return
        generate_images(
            self.model.pipeline,
            self.base_scheduler_config,
            warm_up_request(self.model.pipeline, steps),
            adapter=self.adapter,
        )

    def admit(self, request: GenerateRequest, model_name: str) -> tuple[int, Provenance]:
        """The denoising iterations (step callbacks) `request` will take and the provenance of its run; raises
        ValueError for what this model cannot run (an adapter it does not have, a sampler that does not build)."""
        scheduler = self._admission_scheduler(request.sampler, request.mode)
        if scheduler is None:
            raise ValueError(f"sampler {request.sampler.value} does not run {request.mode.value} on this model")
        iterations = denoising_iterations(scheduler, request.steps, request.denoise_strength)
        self._lora_adapters.check(request.loras)
        return iterations, provenance(self.model, model_name, self.fingerprint, scheduler)

    def _admission_scheduler(self, sampler: Sampler, mode: GenerationMode) -> SchedulerMixin | None:
        """The scheduler that counts a request's iterations and names it in the provenance, or None when `sampler`
        does not run `mode` on this model: decided and built once per sampler and mode (admission is on the worker's
        main thread; this one is never run: the pipeline call takes a fresh one)."""
        key = (sampler, mode)
        if key not in self._admission:
            runs = self.family is None or sampler_runs(sampler, self.base_scheduler_config, self.family, mode)
            self._admission[key] = build_scheduler(sampler, self.base_scheduler_config) if runs else None
        return self._admission[key]

    def truncation_warnings(self, request: GenerateRequest, long_prompts: LongPrompts) -> list[str]:
        """A warning for each prompt longer than the text encoder's window (the encoder reads only its start)."""
        pipeline: Any = self.model.pipeline
        if getattr(pipeline, "tokenizer", None) is None:
            return []
        if self._long_prompts(long_prompts) == "chunk":
            return []  # read whole, in windows
        tokenizer, window = pipeline.tokenizer, pipeline.tokenizer.model_max_length
        if self.adapter.max_sequence_length is not None:
            # The flow families: the long-context encoder (T5, Qwen2.5-VL) reads up to `max_sequence_length`; their
            # CLIP encoders, where present, give only the pooled summary of the start, as the models were trained.
            tokenizer, window = self.adapter.long_tokenizer(pipeline), self.adapter.sequence_length(pipeline)
        warnings = []
        for field, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            count = token_count(pipeline, text, tokenizer)
            if count > window:
                warnings.append(
                    f"{field} is {count} tokens; the text encoder reads the first {window}, the rest is ignored"
                )
        return warnings

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        on_step: StepHook | None = None,
        inputs: Sequence[Inputs] | None = None,
        long_prompts: LongPrompts = "truncate",
    ) -> Generation:
        """Run a batch of compatible requests in one pipeline call with the first request's LoRAs (a batch shares
        them), timed on the device. `on_step` returning True stops the run (the images are then not meant for use)."""
        timer = self._timers.start()

        def hook(step: int, total: int, latents: Latents) -> bool:
            timer.step_done()
            return on_step is not None and on_step(step, total, latents)

        try:
            with self._lora_adapters.applied(requests[0].loras):
                images = generate_batch(
                    self.model.pipeline,
                    self.base_scheduler_config,
                    requests,
                    hook,
                    inputs,
                    self._long_prompts(long_prompts),
                    self.adapter,
                )
        finally:
            self._timers.stop()
        return Generation(images, timer.step_seconds(), timer.phase_seconds())

    def preview(self, latents: Latents, step: int) -> PreviewEvent:
        """The preview event of one job's latents at `step` (the family's latent→RGB projection)."""
        return preview_event(latents, self.adapter.latent_rgb, step, self.adapter.latent_rgb_bias)

    @staticmethod
    def is_filtered(image: Image.Image) -> bool:
        """Whether the safety checker blacked out this generated image."""
        return bool(image.info.get(FILTERED_INFO_KEY))

    @staticmethod
    def is_out_of_memory(exc: BaseException) -> bool:
        """Whether a failure was the device (or host) running out of memory."""
        return isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError)

    def release_memory(self) -> None:
        """Give cached device memory back (after an out-of-memory failure or an abandoned run)."""
        if self.model.device.type == "cuda":
            torch.cuda.empty_cache()

    def _long_prompts(self, requested: LongPrompts) -> LongPrompts:
        """The long-prompt mode this model can honour: `chunk` only where its family chunks."""
        return "chunk" if requested == "chunk" and self.adapter.chunks_long_prompts(self.model.pipeline) else "truncate"
