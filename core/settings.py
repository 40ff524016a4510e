"""Settings for every imagegen process, read from `IMAGEGEN_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One settings object per process; tests build their own and inject it."""

    model_config = SettingsConfigDict(env_prefix="IMAGEGEN_", env_ignore_empty=True, extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"

    # What a worker serves, and the API's default model: a Hugging Face id, a local diffusers folder,
    # a single-file checkpoint (.safetensors / .ckpt), `tiny` or `demo`.
    model: str = "demo"
    # The name clients use for that model (queue name, `model` request field). Derived from `model` when unset.
    model_name: str | None = Field(default=None, max_length=100)
    # Named models with their source, family and request defaults (core/catalog.py); `model` may name one of them.
    models_file: Path | None = None
    model_family: Literal["sd15", "sd2", "sdxl", "turbo"] = "sd15"  # set from the models file entry
    # Prompts past the text encoder's 77 tokens: "truncate" (with a warning on the job) or "chunk" (worker/prompts.py).
    long_prompts: Literal["truncate", "chunk"] = "truncate"
    # Safety checker (set by a models-file entry's `safety_checker`): images it flags are blacked out by diffusers and
    # marked `content_filtered` on the job. The model's own checker, else one loaded from `safety_checker_source`.
    safety_checker: bool = False
    safety_checker_source: str = "CompVis/stable-diffusion-safety-checker"
    lora_dir: Path | None = None  # LoRA adapters a worker offers: `<name>.safetensors` files
    # POST /generate for a model no live worker serves: 503, unless this allows queuing for one that will come
    # (scale from zero).
    queue_without_workers: bool = False

    device: str | None = None  # "cuda", "cuda:1", "cpu"; default: CUDA when present, else CPU
    dtype: Literal["float16", "bfloat16", "float32"] | None = None  # default: float16 on CUDA, float32 on CPU
    cache_dir: Path = Path.home() / ".cache" / "imagegen"
    # Runtime options (worker/acceleration.py); None: on for CUDA, off for CPU.
    channels_last: bool | None = None
    fuse_qkv: bool | None = None
    vae_tiling: bool | None = None
    compile: bool = False  # torch.compile the UNet; the warm-up at start-up pays the compilation
    compile_mode: str = "max-autotune-no-cudagraphs"
    cpu_threads: int | None = None

    max_pixels: int = Field(default=1024 * 1024, gt=0)
    # A request body (JSON with base64 images, or multipart): two 8 MiB images fit, as base64.
    max_body_bytes: int = Field(default=24 * 1024 * 1024, gt=0)
    max_input_image_bytes: int = Field(default=8 * 1024 * 1024, gt=0)  # one input image, as sent
    result_ttl_seconds: int = Field(default=3600, gt=0)
    queue_ttl_seconds: int = Field(default=3600, gt=0)
    job_timeout_seconds: int = Field(default=600, gt=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    step_events_per_second: float = Field(default=10.0, gt=0)  # step events (and progress writes) per job
    events_max_len: int = Field(default=1000, ge=100)  # cap of each job's event stream
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    warmup_steps: int = Field(default=2, ge=0)
    max_batch: int = Field(default=4, ge=1)  # compatible jobs run in one pipeline call
    max_batch_images: int = Field(default=16, ge=1)  # images in one pipeline call
    batch_wait_ms: float = Field(default=10.0, ge=0)  # how long a worker waits for batch mates
    worker_id: str | None = None
    metrics_host: str = "0.0.0.0"  # the worker's /metrics, /healthz and /readyz
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    log_level: str = "INFO"

    # Reliability: lost workers, bounded queues.
    max_attempts: int = Field(default=3, ge=1)  # starts of a job before a lost worker fails it (`worker_lost`)
    reaper_seconds: float = Field(default=5.0, ge=0)  # how often the API looks for lost jobs (0: never)
    max_queue_depth: int = Field(default=1000, ge=1)  # per model; beyond it POST /generate answers 429

    # Security (all off unless configured).
    api_key_hashes: list[str] = Field(default_factory=list)  # sha256 hex of each client key
    admin_key_hashes: list[str] = Field(default_factory=list)  # sha256 hex of keys for /metrics and all jobs
    rate_limit_per_minute: int = Field(default=120, ge=1)  # per API key
    max_active_jobs_per_key: int = Field(default=50, ge=1)  # queued + running, per API key
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    openai_timeout_seconds: float = Field(default=300.0, gt=0)  # POST /v1/images/generations waits this long

    # Webhooks (Standard Webhooks signatures).
    webhook_secret: str | None = None  # "whsec_<base64>"; required for webhook_url requests
    webhook_allow_hosts: list[str] = Field(default_factory=list)  # hosts exempt from the private-address refusal
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_seconds: float = Field(default=3600.0, gt=0)  # give up on a delivery after this long
    webhook_deliver: bool = True  # the API process runs the delivery loop

    def served_model_name(self) -> str:
        """The public name of `model`: `model_name` if set, else the id, or a file or folder's stem."""
        if self.model_name:
            return self.model_name
        path = Path(self.model)
        if self.model.startswith(("/", ".", "~")) or path.suffix in {".safetensors", ".ckpt"}:
            return path.expanduser().stem or path.name
        return self.model


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
