"""Timing pipeline phases on the device: CUDA events on GPUs (no host clock around asynchronous work), the host
clock on CPUs. Marks are read once at the end of a job, with a single synchronisation.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from diffusers import DiffusionPipeline

Mark = Any  # torch.cuda.Event on CUDA, float seconds elsewhere


class DeviceClock:
    """Makes marks in the device's timeline and measures between them."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Mark:
        """A point in the device's stream of work (recorded now, completes when the work before it does)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Mark, end: Mark) -> float:
        """Device time between two marks (waits for `end` on CUDA)."""
        if self.cuda:
            end.synchronize()
            return float(start.elapsed_time(end)) / 1000.0
        return float(end - start)


class PhaseTimer:
    """Marks of one pipeline call: text encoding and VAE decode intervals, the denoising start and each step's end."""

    def __init__(self, clock: DeviceClock) -> None:
        self.clock = clock
        self.intervals: dict[str, list[tuple[Mark, Mark]]] = {"text_encode": [], "vae_decode": []}
        self._open: dict[str, Mark] = {}
        self.denoise_start: Mark | None = None
        self.step_ends: list[Mark] = []

    def begin(self, phase: str) -> None:
        self._open[phase] = self.clock.mark()

    def end(self, phase: str) -> None:
        start = self._open.pop(phase, None)
        if start is not None:
            self.intervals[phase].append((start, self.clock.mark()))

    def unet_called(self) -> None:
        if self.denoise_start is None:
            self.denoise_start = self.clock.mark()

    def step_done(self) -> None:
        self.step_ends.append(self.clock.mark())

    def step_seconds(self) -> list[float]:
        """Duration of each denoising iteration."""
        if self.denoise_start is None:
            return []
        marks = [self.denoise_start, *self.step_ends]
        return [self.clock.seconds(a, b) for a, b in itertools.pairwise(marks)]

    def phase_seconds(self) -> dict[str, float]:
        """Total device time of text encoding, denoising and VAE decoding."""
        result = {phase: sum(self.clock.seconds(a, b) for a, b in pairs) for phase, pairs in self.intervals.items()}
        if self.denoise_start is not None and self.step_ends:
            result["denoise"] = self.clock.seconds(self.denoise_start, self.step_ends[-1])
        return result


class PipelineTimers:
    """Forward hooks on the pipeline's text encoders, UNet and VAE decoder that feed the current job's timer."""

    def __init__(self, pipeline: DiffusionPipeline, clock: DeviceClock) -> None:
        self.clock = clock
        self.current: PhaseTimer | None = None
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            module = getattr(pipeline, name, None)
            if module is not None:
                self._hook(module, "text_encode")
        decoder = getattr(getattr(pipeline, "vae", None), "decoder", None)
        if decoder is not None:
            self._hook(decoder, "vae_decode")
        # The denoiser: the SD line's UNet, the flow families' transformer.
        denoiser = getattr(pipeline, "unet", None) or pipeline.transformer
        denoiser.register_forward_pre_hook(lambda module, args: self._unet_called())

    def _hook(self, module: torch.nn.Module, phase: str) -> None:
        # Hooks return None, so they never replace the module's inputs or outputs.
        def before(module: torch.nn.Module, args: Any) -> None:
            if self.current is not None:
                self.current.begin(phase)

        def after(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self.current is not None:
                self.current.end(phase)

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def _unet_called(self) -> None:
        if self.current is not None:
            self.current.unet_called()

    def start(self) -> PhaseTimer:
        """A fresh timer that the hooks feed until `stop`."""
        self.current = PhaseTimer(self.clock)
        return self.current

    def stop(self) -> None:
        self.current = None
