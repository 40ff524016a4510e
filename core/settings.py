"""Settings for every imagegen process, read from `IMAGEGEN_*` environment variables.

Each field's `description` is its documentation: the README's configuration table is rendered from it
(`tools/settings_table.py`), and a test fails when the two differ.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def sentinel_address(entry: str) -> tuple[str, int]:
    """The host and port of one Redis Sentinel, `host:port` or `[v6]:port`; ValueError when it is not one."""
    host, sep, port = entry.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a sentinel address is host:port, not {entry!r}")
    return host, int(port)


class SentinelShard(NamedTuple):
    """A shard named by a master of the sentinels of `IMAGEGEN_REDIS_SENTINELS`:
    `sentinel://[user:password@]master[/db]` (`userinfo`: the URL's `user:password`, still percent-encoded; empty:
    those of `IMAGEGEN_REDIS_URL`)."""

    master: str
    db: int
    userinfo: str

    def primary_url(self, redis_url: str) -> str:
        """`redis_url` (its scheme, TLS and query options) with this shard's db, and its credentials when it has any:
        with sentinels, a client takes only those from its URL (the primary's address comes from the sentinels)."""
        parts = urlsplit(redis_url)
        default_userinfo, _, host = parts.netloc.rpartition("@")
        userinfo = self.userinfo or default_userinfo
        return urlunsplit((parts.scheme, f"{userinfo}@{host}" if userinfo else host, f"/{self.db}", parts.query, ""))


def sentinel_shard(url: str) -> SentinelShard | None:
    """The Sentinel master a shard's `sentinel://` value names; None for a Redis URL; ValueError for a bad one."""
    if not url.startswith("sentinel://"):
        return None
    userinfo, _, rest = url.removeprefix("sentinel://").rpartition("@")
    master, _, db = rest.partition("/")
    if not master or ":" in master or not (db == "" or db.isdigit()):
        raise ValueError(f"a Sentinel shard is `sentinel://[user:password@]master-name[/db]`, not {url!r}")
    return SentinelShard(master=master, db=int(db or 0), userinfo=userinfo)


class Settings(BaseSettings):
    """One settings object per process; tests build their own and inject it."""

    model_config = SettingsConfigDict(env_prefix="IMAGEGEN_", env_ignore_empty=True, extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis for queues, job records and images")
    # Redis high availability (core/redis_connection.py, docs/reliability.md "Redis high availability").
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Redis Sentinel addresses, `host:port`, comma-separated (or a JSON list); set: the primary is "
        "the one they name, and `IMAGEGEN_REDIS_URL` gives only its db, user, password and TLS",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", min_length=1, description="the master name the sentinels monitor"
    )
    redis_sentinel_password: str | None = Field(
        default=None, description="password of the sentinels themselves (their `requirepass`), if they have one"
    )
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        description="replicas that must acknowledge a submission (Redis `WAIT`) before it answers 202; fewer in "
        "time: 503 `not_replicated` (the job is queued, not yet safe from a failover)",
    )
    redis_replica_timeout_ms: int = Field(
        default=500, gt=0, le=5000, description="how long a submission waits for those replicas"
    )
    # Queues sharded by model across Redis primaries (core/sharding.py, docs/scaling.md).
    redis_shards: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="models whose queues, jobs and workers live on a Redis primary of their own: "
        "`model=redis://host:6379/0,...` (or a JSON object); other models use `IMAGEGEN_REDIS_URL`. "
        "`model=sentinel://master-name/0`: the primary that the sentinels of `IMAGEGEN_REDIS_SENTINELS` name for "
        "that master (`sentinel://user:password@master-name/0` for credentials other than `IMAGEGEN_REDIS_URL`'s)",
    )

    model: str = Field(
        default="demo",
        description="what a worker serves (hub id, local diffusers folder, `.safetensors`/`.ckpt` file, "
        "models-file entry, `demo`, `tiny`) and the API's default model",
    )
    model_name: str | None = Field(
        default=None,
        max_length=100,
        description="public name of that model (queue name, request `model`); unset: the id, or a path's stem",
    )
    models_file: Path | None = Field(
        default=None,
        description="TOML file of named models (source, family, defaults, `safety_checker`; `core/catalog.py`); "
        "`IMAGEGEN_MODEL` may name an entry",
    )
    model_family: Literal["sd15", "sd2", "sdxl", "turbo", "flux", "sd3", "qwen-image"] = Field(
        default="sd15",
        description="family of `IMAGEGEN_MODEL` when it is an id or path (`sd15`, `sd2`, `sdxl`, `turbo`, `flux`, "
        "`sd3`, `qwen-image`): the rules the API applies to its requests, and the pipeline class that loads a "
        "single-file checkpoint; set from the models-file entry",
    )
    long_prompts: Literal["truncate", "chunk"] = Field(
        default="truncate",
        description="prompts past the text encoder's 77 tokens: `truncate` (warning on the job) or `chunk` "
        "(75-token windows, as AUTOMATIC1111)",
    )
    safety_checker: bool = Field(
        default=False,
        description="run a safety checker (a models-file entry can turn it on per model): images it flags are "
        "blacked out and marked `content_filtered` on the job",
    )
    safety_checker_source: str = Field(
        default="CompVis/stable-diffusion-safety-checker",
        description="where to load a checker from when the model has none of its own",
    )
    lora_dir: Path | None = Field(
        default=None, description="the worker's LoRA adapters, `<name>.safetensors` files, offered by name"
    )
    # Scale from zero: the worker that will serve the job is not up yet.
    queue_without_workers: bool = Field(
        default=False,
        description="queue jobs for a model no live worker serves (else 503 `no_worker`); `imagegen dev` turns it on",
    )

    device: str | None = Field(
        default=None, description="worker device, e.g. `cuda`, `cuda:1`, `cpu`; unset: CUDA when present, else CPU"
    )
    dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        default=None,
        description="`float16`, `bfloat16` or `float32`; unset: float16 on CUDA, float32 on CPU",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "imagegen",
        description="where `tiny` is built and the dev Redis keeps its file",
    )
    # Runtime options (worker/acceleration.py); None: on for CUDA, off for CPU.
    channels_last: bool | None = Field(
        default=None, description="channels-last memory format for UNet and VAE; unset: on for CUDA, off for CPU"
    )
    fuse_qkv: bool | None = Field(
        default=None, description="fuse the attention's q/k/v projections; unset: on for CUDA, off for CPU"
    )
    vae_tiling: bool | None = Field(
        default=None,
        description="decode images larger than the VAE's tile in tiles; unset: on for CUDA, off for CPU",
    )
    compile: bool = Field(
        default=False,
        description="`torch.compile` the UNet; the warm-up at start-up pays the compilation",
    )
    compile_mode: str = Field(default="max-autotune-no-cudagraphs", description="`torch.compile` mode")
    cpu_threads: int | None = Field(
        default=None,
        gt=0,
        description="torch threads on a CPU worker; unset: torch's default, at most the usable cores less one (left to "
        "the API, Redis and clients on the same host)",
    )

    max_pixels: int = Field(
        default=1024 * 1024, gt=0, description="largest `width*height` accepted (API) and run (worker)"
    )
    # A request body (JSON with base64 images, or multipart): two 8 MiB images fit, as base64.
    max_body_bytes: int = Field(
        default=24 * 1024 * 1024, gt=0, description="request body limit (413 beyond); two 8 MiB images fit as base64"
    )
    max_input_image_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0, description="one input image (img2img, inpainting), as sent"
    )
    result_ttl_seconds: int = Field(default=3600, gt=0, description="how long finished job records and images are kept")
    queue_ttl_seconds: int = Field(
        default=3600,
        gt=0,
        description="how long a job may wait in the queue, unless its request sets `queue_ttl_seconds`",
    )
    job_timeout_seconds: int = Field(default=600, gt=0, description="longest a job may run")
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="worker heartbeat; a worker silent for 3 beats is no longer listed"
    )
    step_events_per_second: float = Field(
        default=10.0,
        gt=0,
        description="step events (and progress writes) per job per second at most; the last step always goes out",
    )
    events_max_len: int = Field(default=1000, ge=100, description="cap of each job's event stream")
    sse_ping_seconds: float = Field(default=15.0, gt=0, description="heartbeat comment interval on event streams")
    warmup_steps: int = Field(
        default=2, ge=0, description="steps of the warm-up generation a worker runs before it takes jobs (0: none)"
    )
    max_batch: int = Field(default=4, ge=1, description="compatible queued jobs a worker runs in one pipeline call")
    max_batch_images: int = Field(default=16, ge=1, description="images in one pipeline call at most")
    batch_wait_ms: float = Field(default=10.0, ge=0, description="how long a worker waits for batch mates")
    worker_id: str | None = Field(
        default=None, description="worker id shown on jobs and in `/models`; unset: host name and a random suffix"
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the worker's metrics port binds (containers set `0.0.0.0` for Prometheus and probes)",
    )
    metrics_port: int = Field(
        default=9101, ge=0, le=65535, description="the worker's `/metrics`, `/healthz`, `/readyz` port (0: off)"
    )
    log_level: str = Field(default="INFO", description="log level")

    # Reliability: lost workers, bounded queues.
    max_attempts: int = Field(
        default=3, ge=1, description="starts of a job before a lost worker fails it `worker_lost`"
    )
    reaper_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how often the API sweeps for lost and overdue jobs (0: never; one worker sweeps on every beat)",
    )
    max_queue_depth: int = Field(
        default=1000, ge=1, description="per model; beyond it submissions answer 429 `queue_full`"
    )
    outage_hold_seconds: float = Field(
        default=600.0,
        gt=0,
        description="how long a worker that lost Redis keeps a finished job's images in memory to write them when it "
        "is back; past that the job is re-queued",
    )

    # Where images live (core/object_store.py, docs/storage.md).
    result_store: str = Field(
        default="redis",
        description="where result and input images live: `redis` (beside the job records) or `s3://bucket/prefix` "
        "(an S3-compatible bucket; region and credentials from the usual AWS variables)",
    )
    result_urls: Literal["presigned", "proxy"] = Field(
        default="presigned",
        description="with a bucket: jobs give presigned GET URLs of the bucket (`presigned`) or "
        "`/jobs/{id}/images/{n}`, the API fetching the bytes (`proxy`)",
    )
    result_url_seconds: int | None = Field(
        default=None,
        gt=0,
        le=7 * 24 * 3600,
        description="how long a presigned URL stays valid (made at each read); unset: the result TTL, at most "
        "7 days (S3's limit)",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="the S3 API's URL (MinIO, R2, a test server); unset: `AWS_ENDPOINT_URL`, else AWS's own",
    )
    result_store_timeout_seconds: float = Field(
        default=5.0, gt=0, description="connect and read timeout of each object-store request"
    )
    result_store_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="tries of each object-store request; then the job fails `result_store_unavailable` (a "
        "submission answers 503)",
    )

    # Security (all off unless configured).
    api_key_hashes: list[str] = Field(
        default_factory=list,
        description="JSON list of SHA-256 hex digests of client keys; any set turns auth on",
    )
    admin_key_hashes: list[str] = Field(
        default_factory=list, description="digests of admin keys (every job, `/metrics`)"
    )
    rate_limit_per_minute: int = Field(default=120, ge=1, description="submissions per key per minute")
    max_active_jobs_per_key: int = Field(default=50, ge=1, description="queued + running jobs per key")
    idempotency_ttl_seconds: int = Field(
        default=24 * 3600, ge=1, description="how long an `Idempotency-Key` replays its job"
    )
    openai_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="how long `POST /v1/images/generations` and `/v1/images/edits` wait for the images before "
        "answering 504 (with `stream`: an `error` event; the job is canceled)",
    )
    max_prefer_wait_seconds: int = Field(
        default=60,
        ge=0,
        description="longest `POST /generate` with `Prefer: wait` (or `wait=N`) holds the request for the job to end "
        "before answering 202 as usual (0: the preference is ignored)",
    )

    # API server: liveness under load, slow and hostile clients.
    ready_timeout_seconds: float = Field(
        default=1.0, gt=0, description="how long `/readyz` waits for Redis before answering 503"
    )
    max_waiting_requests: int = Field(
        default=1000,
        ge=1,
        description="requests that may wait on Redis at once in one API process (submissions, polls, event streams, "
        "`POST /v1/images/...`, `Prefer: wait`), one Redis connection each; more are answered 503 `overloaded` "
        "with `Retry-After: 1`",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="longest a client may take to send a request's headers (from connecting, or from the request's "
        "first byte on a kept-alive connection); then 408 and the connection closes",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="longest a client may take to send a request's body after its headers; then 408 and the "
        "connection closes",
    )
    shutdown_grace_seconds: float = Field(
        default=25.0,
        ge=0,
        description="on SIGTERM, how long the API lets open requests finish before closing them (below "
        "Kubernetes' 30 s termination grace)",
    )
    api_docs: bool = Field(
        default=True, description="serve `/docs` and `/redoc` (with a Content-Security-Policy); off: both answer 404"
    )

    # Webhooks (Standard Webhooks signatures).
    webhook_secret: str | None = Field(
        default=None, description="`whsec_...` signing secret; webhooks are refused without one"
    )
    webhook_allow_hosts: list[str] = Field(
        default_factory=list, description="hosts exempt from the private-address refusal"
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, description="per delivery attempt")
    webhook_retry_seconds: float = Field(default=3600.0, gt=0, description="retry window of a delivery")
    webhook_deliver: bool = Field(
        default=True,
        description="this API process delivers webhooks (one consumer of the shared delivery stream); off: it leaves "
        "them to the API replicas that have it on",
    )

    @field_validator("redis_shards", mode="before")
    @classmethod
    def _shard_map(cls, value: object) -> object:
        """`sdxl=redis://a:6379/0,flux=redis://b:6379/0` or `{"sdxl": "redis://a:6379/0"}`, each a Redis URL or a
        Sentinel master, `sentinel://[user:password@]master-name[/db]`."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                value = json.loads(text)
            else:
                pairs = [entry.partition("=") for entry in text.split(",") if entry.strip()]
                if any(not sep or not model.strip() for model, sep, _ in pairs):
                    raise ValueError(f"redis_shards: `model=redis://host:port/db`, comma-separated, not {text!r}")
                value = {model.strip(): url.strip() for model, _, url in pairs}
        if isinstance(value, dict):
            for model, url in value.items():
                try:
                    sentinel = sentinel_shard(str(url))
                except ValueError as exc:
                    raise ValueError(f"redis_shards: model {model!r}: {exc}") from exc
                if sentinel is None and not str(url).startswith(("redis://", "rediss://", "unix://")):
                    raise ValueError(
                        f"redis_shards: the Redis of model {model!r} is not a redis:// or sentinel:// URL: {url!r}"
                    )
        return value

    @model_validator(mode="after")
    def _sentinel_shards_have_sentinels(self) -> Settings:
        """A `sentinel://` shard names a master of `IMAGEGEN_REDIS_SENTINELS`: refused without them."""
        named = [model for model, url in self.redis_shards.items() if url.startswith("sentinel://")]
        if named and not self.redis_sentinels:
            raise ValueError(f"redis_shards: {', '.join(named)}: a sentinel:// shard needs IMAGEGEN_REDIS_SENTINELS")
        return self

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_list(cls, value: object) -> object:
        """`a:26379,b:26379` or `["a:26379", "b:26379"]`, each entry `host:port`."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        if isinstance(value, list):
            for entry in value:
                sentinel_address(str(entry))
        return value

    @field_validator("result_store")
    @classmethod
    def _result_store(cls, value: str) -> str:
        """`redis`, or `s3://bucket` with an optional `/prefix`."""
        if value != "redis" and not (value.startswith("s3://") and value.removeprefix("s3://").split("/", 1)[0]):
            raise ValueError(f"result_store: `redis` or `s3://bucket/prefix`, not {value!r}")
        return value

    def result_bucket(self) -> tuple[str, str] | None:
        """(bucket, key prefix: empty or ending in `/`) of an `s3://` result store; None for Redis."""
        if not self.result_store.startswith("s3://"):
            return None
        bucket, _, prefix = self.result_store.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return bucket, f"{prefix}/" if prefix else ""

    @property
    def lease_seconds(self) -> float:
        """A worker's lease on a job: three heartbeats. A running job is judged lost only once its lease, counted from
        its claim, has run out and its worker's record lapsed or no longer names it; a job dequeued and not claimed
        for this long goes back to its queue (a worker claims within milliseconds unless it died or lost Redis)."""
        return 3 * self.heartbeat_seconds

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
