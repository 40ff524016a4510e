"""The one list of every metric imagegen exports: name → (type, label names). Tests hold code, alerts and the
dashboard to it."""

from __future__ import annotations

API = {
    "imagegen_http_requests": ("counter", ("method", "route", "status")),
    "imagegen_http_request_duration_seconds": ("histogram", ("method", "route")),
    "imagegen_jobs_submitted": ("counter", ("model",)),
    "imagegen_jobs_rejected": ("counter", ("reason",)),
    "imagegen_queue_depth": ("gauge", ("queue",)),
    "imagegen_workers": ("gauge", ("model", "state")),
    "imagegen_webhook_deliveries": ("counter", ("outcome",)),
}
WORKER = {
    "imagegen_denoise_step_seconds": ("histogram", ("model",)),
    "imagegen_job_phase_seconds": ("histogram", ("model", "phase")),
    "imagegen_jobs": ("counter", ("model", "outcome")),
    "imagegen_images_generated": ("counter", ("model",)),
    "imagegen_batch_size": ("histogram", ("model",)),
    "imagegen_model_load_seconds": ("gauge", ("model",)),
    "imagegen_worker_busy": ("gauge", ("model",)),
    "imagegen_gpu_memory_allocated_bytes": ("gauge", ("device",)),
    "imagegen_gpu_memory_reserved_bytes": ("gauge", ("device",)),
}
ALL = {**API, **WORKER}
# Labels no metric may carry: unbounded values.
FORBIDDEN_LABELS = {"prompt", "job_id", "id", "api_key", "key", "user", "seed", "path"}


def exported_series_names(base: str, kind: str) -> set[str]:
    """The series names Prometheus sees for a metric family."""
    if kind == "counter":
        return {f"{base}_total"}
    if kind == "histogram":
        return {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return {base}
