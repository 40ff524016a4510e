"""Worker metrics, defined once per process (prometheus-client's default registry), served on the worker's port."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

# A denoising step takes from about 5 ms (SD 1.5, large GPU) to seconds (CPU): buckets cover 1 ms .. 30 s.
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
PHASE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
PHASES = ("queue_wait", "text_encode", "denoise", "vae_decode", "image_encode", "store")
OUTCOMES = ("succeeded", "failed", "canceled", "expired", "skipped")

DENOISE_STEP_SECONDS = Histogram(
    "imagegen_denoise_step_seconds",
    "Duration of one denoising iteration (UNet + scheduler), timed on the device.",
    ["model"],
    buckets=STEP_BUCKETS,
)
JOB_PHASE_SECONDS = Histogram(
    "imagegen_job_phase_seconds", "Time a job spends in each phase.", ["model", "phase"], buckets=PHASE_BUCKETS
)
JOBS = Counter("imagegen_jobs", "Jobs a worker ended, by outcome.", ["model", "outcome"])
IMAGES = Counter("imagegen_images_generated", "Images generated.", ["model"])
BATCH_SIZE = Histogram(
    "imagegen_batch_size", "Images denoised together in one pipeline call.", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64)
)
MODEL_LOAD_SECONDS = Gauge("imagegen_model_load_seconds", "Time to load the model and warm it up.", ["model"])
WORKER_BUSY = Gauge("imagegen_worker_busy", "1 while the worker runs a job, else 0.", ["model"])


class GpuMemoryCollector(Collector):
    """CUDA memory allocated and reserved by this process, read at scrape time (nothing on CPU workers)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families this collector exports (without values)."""
        yield GaugeMetricFamily("imagegen_gpu_memory_allocated_bytes", "CUDA memory allocated.", labels=["device"])
        yield GaugeMetricFamily("imagegen_gpu_memory_reserved_bytes", "CUDA memory reserved.", labels=["device"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.device.type != "cuda":
            return
        allocated, reserved = self.describe()
        allocated.add_metric([str(self.device)], torch.cuda.memory_allocated(self.device))
        reserved.add_metric([str(self.device)], torch.cuda.memory_reserved(self.device))
        yield allocated
        yield reserved


def register_gpu_memory(device: str) -> None:
    """Export GPU memory gauges for `device`, e.g. `cuda:0` (once per process)."""
    REGISTRY.register(GpuMemoryCollector(torch.device(device)))
