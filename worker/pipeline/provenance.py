"""What a job's images depend on besides its request: the model's files, the sampler's config, the libraries and
the device. Recorded on every job, so re-submitting the recorded request on the same machine reproduces the image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.schemas import Provenance
from worker.pipeline.loading import LoadedModel

# Large weight files are fingerprinted from their size and first and last MiB (hashing 4 GB at every start would
# cost seconds); small files are hashed whole.
_WHOLE_FILE_LIMIT = 8 * 2**20
_EDGE = 2**20
_LIBRARIES = ("torch", "diffusers", "transformers", "imagegen")


def model_fingerprint(source: str) -> str:
    """A SHA-256 over the model's files (relative path, size, content or its edges); `hub:<id>` for hub ids."""
    root = Path(source).expanduser()
    if not root.exists():
        return f"hub:{source}"
    files = sorted(p for p in (root.rglob("*") if root.is_dir() else [root]) if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root) if root.is_dir() else path.name}:{size}\n".encode())
        with path.open("rb") as handle:
            if size <= _WHOLE_FILE_LIMIT:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_EDGE))
                handle.seek(size - _EDGE)
                digest.update(handle.read(_EDGE))
    return digest.hexdigest()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide the pixels."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def _recordable(value: Any) -> Any:
    """A config value as JSON keeps it: a float that is not finite (DPM-Solver's `lambda_min_clipped` is -inf) as
    its name, `"-inf"`, which `float()` reads back (JSON has no infinity; the record would say null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_recordable(item) for item in value]
    return value


def scheduler_record(scheduler: Any) -> dict[str, Any]:
    """The scheduler's config as it was built for the run: the model's own (for the flow families the shift
    settings: `shift`, and with `use_dynamic_shifting` the base and max shift and sequence lengths from which the
    pipeline derives the shift for the image's size), with the sampler's options laid over it (`flow_shift`,
    `use_flow_sigmas`, `prediction_type` for the multistep solvers on flow sigmas). The config's items, not its
    attributes: `set_timesteps` with a `mu` overwrites DPM-Solver's `flow_shift` attribute for that call only."""
    return {key: _recordable(value) for key, value in dict(scheduler.config).items() if not key.startswith("_")}


def provenance(model: LoadedModel, model_name: str, fingerprint: str, scheduler: Any) -> Provenance:
    """The record of one pipeline call's circumstances (any family: the model's files, whatever its denoiser, UNet
    or transformer; the scheduler and its config; the dtype it runs in, bfloat16 for the flow families on CUDA)."""
    return Provenance(
        model=model_name,
        model_source=model.source,
        model_hash=fingerprint,
        scheduler=type(scheduler).__name__,
        scheduler_config=scheduler_record(scheduler),
        libraries=dict(library_versions()),
        device=str(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
    )
