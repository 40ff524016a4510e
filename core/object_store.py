"""Where result and input images live, behind one small interface (`ImageStore`: put, get, url, delete): Redis by
default, beside the job records; or an S3-compatible bucket (`IMAGEGEN_RESULT_STORE=s3://bucket/prefix`).

With Redis the bytes ride inside the job's own writes (the input images in the submission's MULTI, the results in the
fenced transition that ends the job), so nothing changes for the default. With a bucket, the worker puts a result
before its fenced transition, which then records only how many there are; the objects' keys follow from the job (id,
winning attempt, format), so the API builds presigned URLs from the record alone. Objects expire through an index
in Redis (`keys.stored_objects_key`) that the API's sweeper works through, and optionally a bucket lifecycle rule.

boto3 is imported only when a bucket is configured, so the default install and the API's import time do not pay for
it. Its calls block: the API makes them in its thread pool, the worker on its finishing thread (docs/storage.md says
why not aioboto3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol, cast

from redis import Redis

from core import keys
from core.settings import Settings

# S3's DeleteObjects takes up to 1000 keys per call.
_DELETE_BATCH = 1000


class ResultStoreUnavailableError(Exception):
    """The object store did not answer, or refused, after the configured timeouts and retries."""


class ImageStore(Protocol):
    """Bytes of result and input images under keys the store builds."""

    inline: bool  # True: the bytes travel inside the job's Redis writes (the Redis store), not through put()

    def result_key(self, job_id: str, attempt: int, index: int, extension: str) -> str:
        """Key of the `index`-th result image that run `attempt` of the job made."""
        ...

    def input_key(self, job_id: str, field: str) -> str:
        """Key of a job's input image `field`."""
        ...

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`; ResultStoreUnavailableError when the store does not take it."""
        ...

    def get(self, key: str) -> bytes | None:
        """The bytes under `key`, None when absent (expired); ResultStoreUnavailableError when the store is away."""
        ...

    def url(self, key: str) -> str | None:
        """A URL a client may GET the object at (presigned, expiring), or None when only the API serves it."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects (absent ones are fine); ResultStoreUnavailableError when the store is away."""
        ...


class RedisImageStore:
    """Images in Redis under `core/keys.py`'s keys, with the result TTL: today's behaviour and the default."""

    inline = True

    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    def result_key(self, job_id: str, attempt: int, index: int, extension: str) -> str:
        """The Redis key (the fenced transition guards against a losing attempt, so the key needs no attempt)."""
        return keys.job_image_key(job_id, index)

    def input_key(self, job_id: str, field: str) -> str:
        """The Redis key of the input image."""
        return keys.job_input_key(job_id, field)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """SET with the result TTL."""
        self.redis.set(key, data, ex=self.ttl)

    def get(self, key: str) -> bytes | None:
        """GET."""
        data = cast(bytes | None, self.redis.get(key))
        return bytes(data) if data is not None else None

    def url(self, key: str) -> str | None:
        """None: the API serves Redis-held images itself."""
        return None

    def delete(self, keys: Iterable[str]) -> None:
        """DEL."""
        names = list(keys)
        if names:
            self.redis.delete(*names)


class S3ImageStore:
    """Images as objects in an S3-compatible bucket, through a boto3 client (thread-safe, one per process)."""

    inline = False

    def __init__(self, client: Any, bucket: str, prefix: str, url_seconds: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.url_seconds = url_seconds
        # What an unreachable or refusing store raises (after botocore's own retries); anything else is a bug.
        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ImageStore:
        """A store on the settings' bucket; endpoint from `IMAGEGEN_S3_ENDPOINT_URL` (else boto3's own chain:
        `AWS_ENDPOINT_URL`, AWS), region and credentials from boto3's chain (environment, profile, IRSA/instance
        role). Every request has bounded timeouts and tries, so an outage ends in an error, never a hang."""
        import boto3  # only with a bucket configured
        from botocore.config import Config

        location = settings.result_bucket()
        assert location is not None, "an s3:// result store"
        config = Config(
            connect_timeout=settings.result_store_timeout_seconds,
            read_timeout=settings.result_store_timeout_seconds,
            retries={"max_attempts": settings.result_store_max_attempts, "mode": "standard"},
            signature_version="s3v4",
            # A custom endpoint (MinIO, a test server on an IP address) serves path-style; AWS picks its own.
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        )
        client = boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
        url_seconds = settings.result_url_seconds or min(settings.result_ttl_seconds, 7 * 24 * 3600)
        return cls(client, *location, url_seconds)

    def result_key(self, job_id: str, attempt: int, index: int, extension: str) -> str:
        """The object key, under the run's attempt."""
        return keys.result_object_key(self.prefix, job_id, attempt, index, extension)

    def input_key(self, job_id: str, field: str) -> str:
        """The object key of the input image."""
        return keys.input_object_key(self.prefix, job_id, field)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """PutObject."""
        self._call(
            "put", lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        )

    def get(self, key: str) -> bytes | None:
        """GetObject; None for a missing key."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except self._errors as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise ResultStoreUnavailableError(f"object store unavailable (get {key}): {exc}") from exc

    def url(self, key: str) -> str:
        """A presigned GET URL, valid `url_seconds` (signed locally: no request to the store)."""
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_seconds
        )
        return url

    def delete(self, keys: Iterable[str]) -> None:
        """DeleteObjects, in batches of 1000."""
        names = list(keys)
        for start in range(0, len(names), _DELETE_BATCH):
            batch = [{"Key": name} for name in names[start : start + _DELETE_BATCH]]
            request = partial(self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            self._call("delete", request)

    def _call(self, what: str, request: Callable[[], object]) -> None:
        try:
            request()
        except self._errors as exc:
            raise ResultStoreUnavailableError(f"object store unavailable ({what} in {self.bucket}): {exc}") from exc


def image_store(settings: Settings, redis: Redis) -> ImageStore:
    """The process's image store, as configured (`IMAGEGEN_RESULT_STORE`)."""
    if settings.result_bucket() is None:
        return RedisImageStore(redis, settings.result_ttl_seconds)
    return S3ImageStore.from_settings(settings)


def schedule_deletion(redis: Redis, object_keys: Iterable[str], at: float) -> None:
    """Record that the objects are to be deleted at `at` (epoch seconds); written before they are put, so an object
    whose writer died before recording it on its job is still deleted."""
    mapping = {key: at for key in object_keys}
    if mapping:
        redis.zadd(keys.stored_objects_key(), mapping)


def delete_due_objects(redis: Redis, store: ImageStore, now: float | None = None, limit: int = 1000) -> list[str]:
    """Delete the objects whose time has come (at most `limit` per call) and forget them; returns their keys.
    A store outage leaves them in the index for the next sweep."""
    now = time.time() if now is None else now
    found = cast(list[bytes], redis.zrangebyscore(keys.stored_objects_key(), "-inf", now, start=0, num=limit))
    due = [raw.decode() for raw in found]
    if not due:
        return []
    store.delete(due)
    redis.zrem(keys.stored_objects_key(), *due)
    return due
