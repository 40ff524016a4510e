"""Queues sharded by model: the setting's forms, and which Redis a model and a job id resolve to."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import SentinelShard, Settings, sentinel_shard
from core.sharding import RedisShards, model_tag, new_job_id, shard_settings

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


def test_a_sentinel_shard_names_a_master_of_the_sentinels_and_keeps_the_default_urls_options() -> None:
    settings = Settings(
        redis_url="rediss://:default-pw@ignored:6379/0?ssl_cert_reqs=none",
        redis_sentinels="s1:26379,s2:26379",
        redis_shards='{"squares": "sentinel://imagegen-squares/3", "sdxl": "sentinel://app:shard-pw@Big_Master"}',
    )
    assert sentinel_shard(settings.redis_shards["squares"]) == SentinelShard("imagegen-squares", 3, "")
    assert sentinel_shard(SDXL) is None
    squares, sdxl = shard_settings(settings, "squares"), shard_settings(settings, "sdxl")
    assert (squares.redis_sentinel_master, squares.redis_sentinels) == ("imagegen-squares", ["s1:26379", "s2:26379"])
    # The default URL's TLS scheme and query options, the shard's db, and its credentials when it has its own.
    assert squares.redis_url == "rediss://:default-pw@ignored:6379/3?ssl_cert_reqs=none"
    assert (sdxl.redis_sentinel_master, sdxl.redis_url) == (
        "Big_Master",
        "rediss://app:shard-pw@ignored:6379/0?ssl_cert_reqs=none",
    )
    assert shard_settings(settings, "circles") is settings


def test_sentinel_shards_are_told_apart_by_master_and_db() -> None:
    settings = Settings(
        redis_url="redis://x:6379/0",
        redis_sentinels="s1:26379",
        redis_sentinel_master="main",
        redis_shards={"a": "sentinel://sq/0", "b": "sentinel://sq", "c": "sentinel://sq/1", "d": "sentinel://main/0"},
    )
    shards = RedisShards(settings, lambda shard: (shard.redis_sentinel_master, shard.redis_url))
    assert shards.all() == [("main", "redis://x:6379/0"), ("sq", "redis://x:6379/0"), ("sq", "redis://x:6379/1")]
    assert shards.for_model("a") is shards.for_model("b") and shards.for_model("d") is shards.default


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sdxl=sentinel://", "sentinel://"),
        ("sdxl=sentinel://host:26379/0", "master-name"),
        ("sdxl=sentinel://master/zero", "master-name"),
        ("sdxl=sentinel://master/0", "needs IMAGEGEN_REDIS_SENTINELS"),
    ],
)
def test_a_bad_sentinel_shard_is_refused_saying_its_form(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(redis_shards=value)
