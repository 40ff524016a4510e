"""Webhook delivery: a background thread of the API that POSTs the job events jobs subscribed to, signed the Standard
Webhooks way, retried with exponential backoff until delivered or `webhook_retry_seconds` after the first attempt.

The Lua of `core/job_scripts.py` appends each subscribed event to the delivery stream. A delivery leaves the stream
(XACK) only in the same script that settles it, and a retry waits in a sorted set under a lease while it is being
attempted, so a crash anywhere means a delivery is made again (at least once), never lost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
from prometheus_client import Counter
from redis import Redis
from redis.exceptions import RedisError, ResponseError
from standardwebhooks import Webhook

from core import keys
from core.jobs import JobStore
from core.settings import Settings
from service.results import ResultImages
from service.webhook_targets import IPAddress, WebhookTargetRefusedError, checked_addresses

log = logging.getLogger(__name__)

DELIVERIES = Counter("imagegen_webhook_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"])

GROUP = "webhook-deliverers"  # the consumer group on the delivery stream: a name inside the key, not a key
BATCH = 32  # stream entries read, or due retries taken, per step
MAX_BATCHES_PER_PASS = 8  # so a flood of new events cannot starve due retries
MAX_BACKOFF_SECONDS = 300.0
POLL_MS = 500  # the thread's longest wait for new entries; also how late a due retry may start

# Take up to ARGV[3] retries due by ARGV[1], leasing each until ARGV[2]: taken by one process at a time, and
# attempted again (by anyone) if that process dies before settling it.
_LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""

# KEYS: stream, retries. ARGV: source ('stream' or 'retry'), group, entry id or retry member, due, new member ('':
# done). Drops the delivery from where it came from and, if it is to be retried and was still ours, schedules it.
_SETTLE = """
local held
if ARGV[1] == 'stream' then
  held = redis.call('XACK', KEYS[1], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
else
  held = redis.call('ZREM', KEYS[2], ARGV[3])
end
if held == 1 and ARGV[5] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5]) end
return held
"""

_Fields = Mapping[bytes | str, bytes | str]  # a stream entry's fields, as redis-py returns them


class Outcome(StrEnum):
    """What became of one delivery attempt (the `outcome` label)."""

    DELIVERED = "delivered"
    RETRIED = "retried"
    GAVE_UP = "gave_up"
    REFUSED = "refused"


@dataclass(frozen=True)
class Delivery:
    """One job event to POST, and how far its attempts got."""

    job_id: str
    type: str
    data: str  # the event's JSON, as the job's stream holds it
    url: str
    event_id: str  # its id in the job's stream: names the message, and says when the event happened
    first_attempt: float | None = None
    attempts: int = 0

    @classmethod
    def from_entry(cls, fields: _Fields) -> Delivery | None:
        """The delivery a stream entry asks for, or None when the entry is malformed."""
        text = {_text(k): _text(v) for k, v in fields.items()}
        try:
            delivery = cls(text["job_id"], text["type"], text["data"], text["url"], text["event_id"])
            delivery.body()
        except Exception:  # a missing field, bad JSON, an odd event id: nothing to deliver
            return None
        return delivery

    @classmethod
    def from_member(cls, member: str) -> Delivery:
        """The delivery a retry-set member holds."""
        return cls(**json.loads(member))

    def member(self) -> str:
        """This delivery as a retry-set member."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def message_id(self) -> str:
        """The `webhook-id`: the same for every attempt, so receivers can drop duplicates."""
        return f"msg_{self.job_id}_{self.event_id}"

    def body(self) -> str:
        """The JSON POSTed: {"type": "job.<event>", "timestamp": ISO 8601, "data": {"job_id", event fields}}."""
        event = json.loads(self.data)
        if not isinstance(event, dict):
            raise ValueError("event data is not an object")
        event.pop("type", None)  # it is the payload's own type
        millis = int(self.event_id.split("-", 1)[0])
        happened = datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="milliseconds")
        payload = {
            "type": f"job.{self.type}",
            "timestamp": happened.replace("+00:00", "Z"),
            "data": {"job_id": self.job_id, **event},
        }
        return json.dumps(payload, separators=(",", ":"))


@dataclass(frozen=True)
class _Taken:
    delivery: Delivery
    source: str  # "stream" or "retry"
    handle: str  # the stream entry id, or the retry-set member as stored


class WebhookDeliverer:
    """Delivers webhook events from Redis on its own thread (`start`/`stop`), or one pass at a time (`run_once`)."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        backoff_base_seconds: float = 1.0,
        concurrency: int = 8,
        consumer: str | None = None,
        lease_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        results: ResultImages | None = None,
    ) -> None:
        self.redis = redis
        # With presigned image URLs, a `succeeded` delivery carries URLs made when it is sent, not when it was queued.
        self._results = results if results is not None and results.presigned else None
        self._jobs = JobStore.from_settings(redis, settings)
        # Epoch seconds that schedule retries and leases; tests pass a fake one to assert exact retry times. The
        # signature's timestamp stays real time: receivers check it against their own clock.
        self.clock = clock
        self.settings = settings
        self.backoff_base_seconds = backoff_base_seconds
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        # Long enough for a whole batch of attempts (connect and read may each take the timeout, DNS some more):
        # an in-flight delivery is never taken over, one whose process died is after this long.
        attempt_seconds = 2 * settings.webhook_timeout_seconds + 10
        default_lease = 60 + attempt_seconds * math.ceil(BATCH / concurrency)
        self.lease_seconds = lease_seconds if lease_seconds is not None else default_lease
        self._stream = keys.webhook_deliveries_key()
        self._retries = keys.webhook_retries_key()
        self._lease = redis.register_script(_LEASE)
        self._settle = redis.register_script(_SETTLE)
        self._signer, self._signer_problem = _signer(settings.webhook_secret)
        self._signer_logged = threading.Lock()
        # No redirects, no proxies from the environment, no pooled connections: each attempt connects to the
        # address that was just checked, and nowhere else.
        self._http = httpx.Client(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": "imagegen-webhooks"},
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook-delivery")
        self._group_ready = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run delivery passes on a daemon thread until `stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="webhook-deliverer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, wait for its in-flight attempts, and release the HTTP client."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease_seconds)
            if self._thread.is_alive():
                log.warning("webhook deliverer did not stop within %.0f s", self.lease_seconds)
                return  # still using its pool and client; they go with the process
            self._thread = None
        self._pool.shutdown(wait=True)
        self._http.close()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self.run_once(block_ms=POLL_MS)
                failures = 0
            except RedisError as exc:  # Redis away: one line per pass, no traceback; deliveries wait in the stream
                failures += 1
                log.warning("webhook delivery paused: Redis unavailable (%s; %d in a row)", exc, failures)
                self._stopping.wait(min(30.0, 2.0 ** min(failures, 5)))
            except Exception:
                failures += 1
                log.exception("webhook delivery pass failed (%d in a row)", failures)
                self._stopping.wait(min(30.0, 2.0 ** min(failures, 5)))

    # --- one pass -------------------------------------------------------------------------------------------

    def run_once(self, block_ms: int = 0) -> int:
        """Attempt every delivery available now (new events, due retries, ones a dead process left); returns how
        many were taken. Waits up to `block_ms` for new events when there is nothing else to do."""
        attempted = self._attempt_all(self._take_due_retries() + self._take_abandoned())
        block = 0 if attempted else self._wait_ms(block_ms)
        for _ in range(MAX_BATCHES_PER_PASS):
            taken = self._read_new(block)
            attempted += self._attempt_all(taken)
            if len(taken) < BATCH or self._stopping.is_set():
                break
            block = 0
        return attempted

    def _wait_ms(self, block_ms: int) -> int:
        """`block_ms`, cut short so the wait for new events ends when the next retry is due."""
        if block_ms <= 0:
            return 0
        upcoming: Any = self.redis.zrange(self._retries, 0, 0, withscores=True)
        if not upcoming:
            return block_ms
        return max(1, min(block_ms, math.ceil((float(upcoming[0][1]) - self.clock()) * 1000)))

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the start of the stream: events appended before any API process ran are delivered too.
            self.redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _read_new(self, block_ms: int) -> list[_Taken]:
        self._ensure_group()
        # BLOCK 0 would wait forever; no BLOCK returns at once.
        block = block_ms if block_ms > 0 else None
        try:
            reply: Any = self.redis.xreadgroup(GROUP, self.consumer, {self._stream: ">"}, count=BATCH, block=block)
        except ResponseError as exc:
            # The stream (and so its group) was deleted, before the read or while it waited: make it again.
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            self._group_ready = False
            return []
        return self._from_entries([entry for _, entries in reply or [] for entry in entries])

    def _take_abandoned(self) -> list[_Taken]:
        """Stream entries read by a consumer that has held them past the lease (it died mid-delivery)."""
        self._ensure_group()
        try:
            reply = self.redis.xautoclaim(
                self._stream, GROUP, self.consumer, min_idle_time=int(self.lease_seconds * 1000), count=BATCH
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            return []
        return self._from_entries(reply[1])

    def _take_due_retries(self) -> list[_Taken]:
        now = self.clock()
        members = self._lease(keys=[self._retries], args=[now, now + self.lease_seconds, BATCH])
        taken = []
        for raw in members:
            member = _text(raw)
            try:
                taken.append(_Taken(Delivery.from_member(member), "retry", member))
            except (ValueError, TypeError):
                log.error("dropping a malformed webhook retry: %.200s", member)
                self._settle(keys=[self._stream, self._retries], args=["retry", GROUP, member, 0, ""])
        return taken

    def _from_entries(self, entries: list[tuple[bytes | str, _Fields | None]]) -> list[_Taken]:
        taken = []
        for entry_id, fields in entries:
            delivery = Delivery.from_entry(fields) if fields else None
            if delivery is None:
                log.error("dropping a malformed webhook stream entry %s", _text(entry_id))
                self._settle(keys=[self._stream, self._retries], args=["stream", GROUP, _text(entry_id), 0, ""])
                continue
            taken.append(_Taken(delivery, "stream", _text(entry_id)))
        return taken

    def _attempt_all(self, taken: list[_Taken]) -> int:
        for future in [self._pool.submit(self._attempt_and_settle, item) for item in taken]:
            try:
                future.result()
            except Exception:
                # Not settled: the delivery stays leased or pending, and is taken again after the lease.
                log.exception("webhook delivery could not be settled")
        return len(taken)

    # --- one delivery ---------------------------------------------------------------------------------------

    def _attempt_and_settle(self, item: _Taken) -> None:
        now = self.clock()
        delivery = replace(
            item.delivery, first_attempt=item.delivery.first_attempt or now, attempts=item.delivery.attempts + 1
        )
        try:
            outcome = self._attempt(delivery)
        except Exception:
            log.exception("webhook attempt %s failed unexpectedly", delivery.message_id())
            outcome = Outcome.RETRIED
        due, member = 0.0, ""
        if outcome is Outcome.RETRIED:
            assert delivery.first_attempt is not None
            deadline = delivery.first_attempt + self.settings.webhook_retry_seconds
            now = self.clock()
            if now >= deadline:
                log.warning(
                    "webhook %s to %s: gave up after %d attempts",
                    delivery.message_id(),
                    delivery.url,
                    delivery.attempts,
                )
                outcome = Outcome.GAVE_UP
            else:
                backoff = self.backoff_base_seconds * 2.0 ** min(delivery.attempts - 1, 30)
                due, member = min(now + min(backoff, MAX_BACKOFF_SECONDS), deadline), delivery.member()
        self._settle(keys=[self._stream, self._retries], args=[item.source, GROUP, item.handle, due, member])
        DELIVERIES.labels(outcome.value).inc()

    def _attempt(self, delivery: Delivery) -> Outcome:
        if self._signer is None:
            self._log_signer_problem()
            return Outcome.GAVE_UP
        try:
            addresses = checked_addresses(delivery.url, self.settings.webhook_allow_hosts)
        except WebhookTargetRefusedError as exc:
            log.warning("webhook %s refused: %s", delivery.message_id(), exc)
            return Outcome.REFUSED
        try:
            status = self._post(delivery, addresses)
        except httpx.InvalidURL as exc:
            log.warning("webhook %s gave up: %s", delivery.message_id(), exc)
            return Outcome.GAVE_UP
        except httpx.HTTPError as exc:
            log.info("webhook %s attempt %d: %s: %s", delivery.message_id(), delivery.attempts, type(exc).__name__, exc)
            return Outcome.RETRIED
        if 200 <= status < 300:
            return Outcome.DELIVERED
        log.info("webhook %s attempt %d: HTTP %d", delivery.message_id(), delivery.attempts, status)
        return Outcome.RETRIED

    def _post(self, delivery: Delivery, addresses: list[IPAddress]) -> int:
        """POST the signed event; returns the status. Connects to the checked `addresses` (in turn while a
        connection fails), or by name when the host is allow-listed ([])."""
        assert self._signer is not None
        body = self._presented(delivery).body()
        sent_at = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.message_id(),
            "webhook-timestamp": str(math.floor(sent_at.timestamp())),
            "webhook-signature": self._signer.sign(delivery.message_id(), sent_at, body),
        }
        url = httpx.URL(delivery.url)
        if not addresses:
            return self._http.post(url, content=body, headers=headers).status_code
        headers["host"] = url.netloc.decode("ascii")
        for address in addresses[:-1]:
            try:
                return self._post_to(url, address, body, headers)
            except httpx.ConnectError:
                continue  # the next address of the same host
        return self._post_to(url, addresses[-1], body, headers)

    def _presented(self, delivery: Delivery) -> Delivery:
        """The delivery with its images as readers see them now (presigned URLs, when so configured)."""
        if self._results is None or delivery.type != "succeeded":
            return delivery
        return replace(delivery, data=self._results.event_data(delivery.data, self._jobs.get(delivery.job_id)))

    def _post_to(self, url: httpx.URL, address: IPAddress, body: str, headers: dict[str, str]) -> int:
        # TLS still checks the host's name (SNI and certificate), not the address.
        extensions = {"sni_hostname": url.raw_host.decode("ascii")}
        pinned = url.copy_with(host=str(address))
        return self._http.post(pinned, content=body, headers=headers, extensions=extensions).status_code

    def _log_signer_problem(self) -> None:
        # Once per process: every delivery is given up the same way.
        if self._signer_logged.acquire(blocking=False):
            log.error("webhook deliveries are given up: %s", self._signer_problem)


def _signer(secret: str | None) -> tuple[Webhook | None, str]:
    if not secret:
        return None, "IMAGEGEN_WEBHOOK_SECRET is not set"
    try:
        return Webhook(secret), ""
    except Exception as exc:  # a malformed secret: bad base64, empty
        return None, f"IMAGEGEN_WEBHOOK_SECRET is not a valid whsec_<base64> secret ({type(exc).__name__})"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
