"""Webhook delivery end to end on the real Redis: job transitions fan out through the Lua, the deliverer POSTs them
to a real local HTTP receiver that checks each Standard Webhooks signature, retries and gives up as configured."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.registry import REGISTRY
from redis import Redis
from standardwebhooks import Webhook

import service.webhooks
from core import keys
from core.event_stream import read_events
from core.events import StepEvent
from core.jobs import JobStore
from core.schemas import GenerateRequest
from core.settings import Settings
from service.webhook_targets import IPAddress
from service.webhooks import GROUP, WebhookDeliverer

SECRET = "whsec_" + base64.b64encode(b"imagegen-test-webhook-secret-32b").decode()
# Clock steps that are exact in binary floating point, so retry times compare with ==.
TICK = 1 / 64


class FakeClock:
    """Epoch seconds that move only when the test moves them (the deliverer's `clock`)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Received:
    """One POST the receiver got, after checking its signature."""

    path: str
    headers: dict[str, str]
    payload: dict[str, object]


class Receiver:
    """A local HTTP server that verifies every webhook and answers each path's scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.bad_signatures: list[str] = []
        self.statuses: dict[str, list[int]] = {}
        self.always: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(SECRET).verify(body, headers)
                except Exception as exc:
                    with receiver._lock:
                        receiver.bad_signatures.append(f"{self.path}: {exc}")
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, payload))
                    scripted = receiver.statuses.get(self.path)
                    status = scripted.pop(0) if scripted else receiver.always.get(self.path, 200)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The receiver's URL for `path`."""
        return f"http://{host}:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        """What was POSTed to `path`, in order."""
        with self._lock:
            return [r for r in self.received if r.path == path]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running receiver on a free loopback port."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    """Test settings with a secret, the loopback receiver allow-listed, and short timeouts."""
    return settings.model_copy(
        update={
            "webhook_secret": SECRET,
            "webhook_allow_hosts": ["127.0.0.1"],
            "webhook_timeout_seconds": 2.0,
            "webhook_retry_seconds": 30.0,
        }
    )


@pytest.fixture
def deliverer(redis_client: Redis, hook_settings: Settings) -> Iterator[WebhookDeliverer]:
    """A deliverer over the test Redis with a fast backoff, driven by the test through `run_once`."""
    worker = WebhookDeliverer(redis_client, hook_settings, backoff_base_seconds=0.05)
    yield worker
    worker.stop()


def _succeed_job(store: JobStore, job_id: str, url: str, events: list[str] | None = None) -> None:
    """Create a job subscribed to `events` (the default ones when None) and take it to `succeeded`."""
    extra = {"webhook_events": events} if events is not None else {}
    store.create(job_id, "tiny", GenerateRequest(prompt="a cat", seed=1, webhook_url=url, **extra))
    assert store.claim(job_id, "worker-a", total_steps=4)
    assert store.mark_succeeded(job_id, [b"image"])


def _drive(deliverer: WebhookDeliverer, until: Callable[[], bool], seconds: float = 10.0) -> int:
    """Run delivery passes until `until()` holds; returns the deliveries attempted."""
    deadline = time.monotonic() + seconds
    attempted = 0
    while not until():
        assert time.monotonic() < deadline, "condition not reached in time"
        attempted += deliverer.run_once(block_ms=20)
    return attempted


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("imagegen_webhook_deliveries_total", {"outcome": outcome}) or 0.0


def _event_id(store: JobStore, job_id: str, event_type: str) -> str:
    return next(entry.id for entry in read_events(store.redis, job_id) if entry.type == event_type)


def _retries(redis: Redis) -> list[tuple[int, float]]:
    """The scheduled retries as (attempts so far, due time), soonest first."""
    scheduled = redis.zrange(keys.webhook_retries_key(), 0, -1, withscores=True)
    return [(json.loads(member)["attempts"], due) for member, due in scheduled]


def _nothing_left(redis: Redis) -> bool:
    pending = redis.xpending(keys.webhook_deliveries_key(), GROUP)["pending"]
    return (
        redis.xlen(keys.webhook_deliveries_key()) == 0 and pending == 0 and redis.zcard(keys.webhook_retries_key()) == 0
    )


def test_a_subscribed_event_is_delivered_signed(
    redis_client: Redis, store: JobStore, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    delivered = _count("delivered")
    _succeed_job(store, "job1", receiver.url("/hook"))  # default events: the terminal ones

    attempted = _drive(deliverer, lambda: len(receiver.at("/hook")) == 1)

    assert attempted == 1
    assert receiver.bad_signatures == []
    [post] = receiver.at("/hook")
    assert post.headers["content-type"] == "application/json"
    assert post.headers["webhook-id"] == f"msg_job1_{_event_id(store, 'job1', 'succeeded')}"
    assert abs(int(post.headers["webhook-timestamp"]) - time.time()) < 10
    assert post.headers["webhook-signature"].startswith("v1,")
    assert post.payload["type"] == "job.succeeded"
    assert post.payload["data"] == {"job_id": "job1", "images": ["/jobs/job1/images/0"], "content_filtered": []}
    assert isinstance(post.payload["timestamp"], str)
    assert abs(datetime.fromisoformat(post.payload["timestamp"]).timestamp() - time.time()) < 10
    assert _count("delivered") == delivered + 1
    assert _nothing_left(redis_client)
    assert deliverer.run_once() == 0  # delivered once, and done


def test_only_subscribed_event_types_are_posted(
    store: JobStore, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    _succeed_job(store, "job-s", receiver.url("/succeeded-only"), ["succeeded"])
    _succeed_job(store, "job-q", receiver.url("/queued-and-started"), ["queued", "started"])

    _drive(deliverer, lambda: len(receiver.received) >= 3)
    deliverer.run_once(block_ms=100)  # anything more would arrive now

    assert [p.payload["type"] for p in receiver.at("/succeeded-only")] == ["job.succeeded"]
    started = sorted(p.payload["type"] for p in receiver.at("/queued-and-started"))
    assert started == ["job.queued", "job.started"]
    assert len(receiver.received) == 3
    assert receiver.bad_signatures == []


def test_a_step_subscription_gets_the_steps_and_nothing_else(
    store: JobStore, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    request = GenerateRequest(prompt="a cat", seed=1, webhook_url=receiver.url("/steps"), webhook_events=["step"])
    store.create("job-t", "tiny", request)
    attempt = store.claim("job-t", "worker-a", total_steps=2).attempt
    for step in (1, 2):
        event = StepEvent(step=step, total=2, step_seconds=0.1, elapsed_seconds=0.1 * step, eta_seconds=0.0)
        store.report_step("job-t", step, 2, eta_seconds=0.0, event=event, attempt=attempt)
    assert store.mark_succeeded("job-t", [b"image"], attempt=attempt)

    _drive(deliverer, lambda: len(receiver.received) >= 2)
    deliverer.run_once(block_ms=100)  # the queued, started and succeeded events would arrive now

    # Deliveries run on several threads, so they may arrive in either order.
    assert sorted((p.payload["type"], p.payload["data"]["step"]) for p in receiver.at("/steps")) == [
        ("job.step", 1),
        ("job.step", 2),
    ]
    assert len(receiver.received) == 2


def test_a_failing_receiver_is_retried_with_the_same_message_id(
    redis_client: Redis, store: JobStore, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    retried, delivered = _count("retried"), _count("delivered")
    receiver.statuses["/flaky"] = [500, 500]  # then 200
    _succeed_job(store, "job2", receiver.url("/flaky"), ["succeeded"])

    assert _drive(deliverer, lambda: len(receiver.at("/flaky")) == 3) == 3

    posts = receiver.at("/flaky")
    assert {p.headers["webhook-id"] for p in posts} == {f"msg_job2_{_event_id(store, 'job2', 'succeeded')}"}
    assert all(p.payload == posts[0].payload for p in posts)
    assert receiver.bad_signatures == []
    assert _count("retried") == retried + 2
    assert _count("delivered") == delivered + 1
    assert _nothing_left(redis_client)


def test_backoff_doubles_between_attempts(
    redis_client: Redis, store: JobStore, receiver: Receiver, hook_settings: Settings
) -> None:
    clock = FakeClock()
    deliverer = WebhookDeliverer(redis_client, hook_settings, backoff_base_seconds=0.25, clock=clock)
    try:
        receiver.always["/down"] = 503
        _succeed_job(store, "job3", receiver.url("/down"), ["succeeded"])
        first = clock.now
        assert deliverer.run_once() == 1
        assert _retries(redis_client) == [(1, first + 0.25)]
        clock.now = first + 0.25 - TICK
        assert deliverer.run_once() == 0  # not due yet
        clock.now = first + 0.25
        assert deliverer.run_once() == 1  # the due retry
        assert _retries(redis_client) == [(2, first + 0.25 + 0.5)]  # twice the first backoff
        assert len(receiver.at("/down")) == 2
    finally:
        deliverer.stop()


def test_an_always_failing_receiver_is_given_up_after_the_retry_window(
    redis_client: Redis, store: JobStore, receiver: Receiver, hook_settings: Settings
) -> None:
    gave_up = _count("gave_up")
    clock = FakeClock()
    settings = hook_settings.model_copy(update={"webhook_retry_seconds": 1.0})
    deliverer = WebhookDeliverer(redis_client, settings, backoff_base_seconds=1 / 16, clock=clock)
    try:
        receiver.always["/dead"] = 500
        _succeed_job(store, "job4", receiver.url("/dead"), ["succeeded"])
        started = clock.now
        attempted_at = []
        for _ in range(20):
            attempted_at.append(clock.now - started)
            assert deliverer.run_once() == 1
            retries = _retries(redis_client)
            if not retries:
                break
            assert _count("gave_up") == gave_up, "given up before the window ended"
            [(attempts, due)] = retries
            assert attempts == len(attempted_at)
            clock.now = due - TICK
            assert deliverer.run_once() == 0, "a retry taken before it was due"
            clock.now = due
        # The backoff doubles from 1/16 s; the last retry is cut to the window's end, where it is given up.
        assert attempted_at == [0, 1 / 16, 3 / 16, 7 / 16, 15 / 16, 1.0]
        assert len(receiver.at("/dead")) == 6
        assert _count("gave_up") == gave_up + 1
        assert _nothing_left(redis_client)
        clock.now += 60
        assert deliverer.run_once() == 0
        assert len(receiver.at("/dead")) == 6
    finally:
        deliverer.stop()


def test_a_private_target_is_refused_and_never_contacted(
    redis_client: Redis, store: JobStore, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    refused = _count("refused")
    _succeed_job(store, "job5", "http://10.1.2.3/hook", ["succeeded"])
    # The receiver itself, named `localhost`: loopback, and only "127.0.0.1" is allow-listed.
    _succeed_job(store, "job6", receiver.url("/by-name", host="localhost"), ["succeeded"])

    assert deliverer.run_once() == 2

    assert _count("refused") == refused + 2
    assert receiver.received == []
    assert _nothing_left(redis_client)  # not retried


def test_the_connection_goes_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, store: JobStore, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    checked: list[str] = []

    def resolve_to_loopback(url: str, allow_hosts: list[str]) -> list[IPAddress]:
        checked.append(url)
        # 127.0.0.2 refuses (the receiver listens on 127.0.0.1 only): the next address is tried.
        return [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(service.webhooks, "checked_addresses", resolve_to_loopback)
    url = f"http://hooks.invalid:{receiver.port}/pinned"  # a name no resolver knows: only the checked address works
    _succeed_job(store, "job13", url, ["succeeded"])

    _drive(deliverer, lambda: len(receiver.at("/pinned")) == 1)

    assert checked == [url]
    assert receiver.at("/pinned")[0].headers["host"] == f"hooks.invalid:{receiver.port}"
    assert receiver.bad_signatures == []


def test_a_delivery_abandoned_by_a_dead_process_is_taken_over(
    redis_client: Redis, store: JobStore, receiver: Receiver, hook_settings: Settings
) -> None:
    first = WebhookDeliverer(redis_client, hook_settings, consumer="dead", lease_seconds=1.0)
    first.run_once()  # creates the group
    first.stop()
    _succeed_job(store, "job7", receiver.url("/orphan"), ["succeeded"])
    # The dead process read the entry and died before attempting it.
    redis_client.xreadgroup(GROUP, "dead", {keys.webhook_deliveries_key(): ">"}, count=10)

    survivor = WebhookDeliverer(redis_client, hook_settings, consumer="alive", lease_seconds=1.0)
    try:
        assert survivor.run_once() == 0  # still within the dead one's lease
        time.sleep(1.1)
        assert _drive(survivor, lambda: len(receiver.at("/orphan")) == 1) == 1
        assert _nothing_left(redis_client)
    finally:
        survivor.stop()


def test_a_retry_leased_by_a_dead_process_is_attempted_again(
    redis_client: Redis, store: JobStore, receiver: Receiver, hook_settings: Settings
) -> None:
    receiver.statuses["/again"] = [500]
    _succeed_job(store, "job8", receiver.url("/again"), ["succeeded"])
    clock = FakeClock()
    deliverer = WebhookDeliverer(redis_client, hook_settings, backoff_base_seconds=0.01, lease_seconds=1.0, clock=clock)
    try:
        assert deliverer.run_once() == 1  # attempt 1 fails: a retry is scheduled
        [member] = redis_client.zrange(keys.webhook_retries_key(), 0, -1)
        # Another process leased it (its score moved to the lease's end) and died.
        lease_end = clock.now + 1.0
        redis_client.zadd(keys.webhook_retries_key(), {member: lease_end})
        clock.now = lease_end - TICK
        assert deliverer.run_once() == 0
        clock.now = lease_end
        assert deliverer.run_once() == 1
        assert len(receiver.at("/again")) == 2
        assert _nothing_left(redis_client)
    finally:
        deliverer.stop()


def test_without_a_secret_deliveries_are_given_up_and_logged_once(
    redis_client: Redis,
    store: JobStore,
    receiver: Receiver,
    hook_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gave_up = _count("gave_up")
    settings = hook_settings.model_copy(update={"webhook_secret": None})
    deliverer = WebhookDeliverer(redis_client, settings)
    try:
        _succeed_job(store, "job9", receiver.url("/unsigned"), ["started", "succeeded"])
        with caplog.at_level(logging.ERROR, logger="service.webhooks"):
            assert deliverer.run_once() == 2
        assert [r.getMessage() for r in caplog.records].count(
            "webhook deliveries are given up: IMAGEGEN_WEBHOOK_SECRET is not set"
        ) == 1
        assert _count("gave_up") == gave_up + 2
        assert receiver.received == []
        assert _nothing_left(redis_client)
    finally:
        deliverer.stop()


def test_events_from_before_the_group_existed_and_after_a_flush_are_delivered(
    redis_client: Redis, store: JobStore, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    _succeed_job(store, "job10", receiver.url("/early"), ["succeeded"])  # no consumer group yet
    assert _drive(deliverer, lambda: len(receiver.at("/early")) == 1) == 1

    redis_client.flushdb()  # the stream and its group are gone
    assert deliverer.run_once() == 0
    _succeed_job(store, "job11", receiver.url("/later"), ["succeeded"])
    assert _drive(deliverer, lambda: len(receiver.at("/later")) == 1) == 1
    assert [p.payload["data"]["job_id"] for p in receiver.received] == ["job10", "job11"]


def test_the_thread_delivers_until_stopped(
    redis_client: Redis, store: JobStore, receiver: Receiver, hook_settings: Settings
) -> None:
    # stop() waits for the thread up to the lease: a thread still alive after it did not stop within 3 s.
    deliverer = WebhookDeliverer(redis_client, hook_settings, backoff_base_seconds=0.05, lease_seconds=3.0)
    deliverer.start()
    try:
        receiver.statuses["/threaded"] = [502]
        _succeed_job(store, "job12", receiver.url("/threaded"), ["succeeded"])
        deadline = time.monotonic() + 10
        while len(receiver.at("/threaded")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        deliverer.stop()
    assert not any(t.name == "webhook-deliverer" for t in threading.enumerate())
    assert _nothing_left(redis_client)
