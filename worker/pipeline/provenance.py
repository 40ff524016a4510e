"""What a job's images depend on besides its request: the model's files, the sampler's config, the libraries and
the device. Recorded on every job, so re-submitting the recorded request on the same machine reproduces the image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
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


def provenance(model: LoadedModel, model_name: str, fingerprint: str, scheduler: Any) -> Provenance:
    """The record of one pipeline call's circumstances."""
    return Provenance(
        model=model_name,
        model_source=model.source,
        model_hash=fingerprint,
        scheduler=type(scheduler).__name__,
        scheduler_config={k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")},
        libraries=dict(library_versions()),
        device=str(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
    )
