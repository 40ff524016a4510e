"""Queues sharded by model: the setting's forms, and which Redis a model and a job id resolve to."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings
from core.sharding import RedisShards, model_tag, new_job_id

DEFAULT = "redis://default:6379/0"
SDXL = "redis://sdxl:6379/0"


def _shards(settings: Settings) -> RedisShards[str]:
    return RedisShards(settings, lambda shard: shard.redis_url)  # a "client" that is its URL: routing, not I/O


@pytest.mark.parametrize(
    "value",
    [f"sdxl={SDXL}, flux-dev={SDXL}", f'{{"sdxl": "{SDXL}", "flux-dev": "{SDXL}"}}'],
)
def test_the_setting_reads_pairs_or_json(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_REDIS_SHARDS", value)
    assert Settings().redis_shards == {"sdxl": SDXL, "flux-dev": SDXL}


@pytest.mark.parametrize("value", ["sdxl", "=redis://x:6379/0", "sdxl=http://x:6379/0"])
def test_a_bad_entry_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValidationError, match="redis_shards"):
        Settings(redis_shards=value)


def test_models_and_job_ids_resolve_to_their_redis() -> None:
    settings = Settings(redis_url=DEFAULT, redis_shards={"sdxl": SDXL, "flux-dev": SDXL, "same": DEFAULT})
    shards = _shards(settings)
    assert shards.all() == [DEFAULT, SDXL]  # each Redis once, the default first
    assert [shards.for_model(m) for m in ("sdxl", "flux-dev", "same", "sd15")] == [SDXL, SDXL, DEFAULT, DEFAULT]
    sdxl_job, plain_job = new_job_id(settings, "sdxl"), new_job_id(settings, "sd15")
    assert sdxl_job.startswith(f"{model_tag('sdxl')}-") and len(sdxl_job) == 41
    assert "-" not in plain_job and len(plain_job) == 32  # unsharded models keep today's ids
    assert shards.for_job(sdxl_job) == SDXL
    assert shards.for_job(plain_job) == DEFAULT
    assert shards.for_job(f"{model_tag('not-sharded')}-{plain_job}") == DEFAULT  # an unknown tag: the default


def test_without_shards_everything_is_the_default_redis() -> None:
    shards = _shards(Settings(redis_url=DEFAULT))
    assert shards.all() == [DEFAULT]
    assert shards.for_model("sdxl") == DEFAULT and shards.for_job("ab-cd") == DEFAULT
