"""Webhook URLs: only http(s) to globally routable addresses, unless the host is allow-listed (no network used)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable

import pytest

from service.webhook_targets import WebhookTargetRefusedError, check_webhook_url, checked_addresses

AddrInfo = list[tuple[int, int, int, str, tuple[object, ...]]]


def _resolver(*addresses: str) -> Callable[..., AddrInfo]:
    """A getaddrinfo that answers `addresses` for any name."""

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> AddrInfo:
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return getaddrinfo


def _unresolvable(host: str, *args: object, **kwargs: object) -> AddrInfo:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "127.0.0.1 is a loopback address"),
        ("http://localhost/hook", "is a loopback address"),
        ("http://127.1/hook", "127.1 (127.0.0.1) is a loopback address"),  # resolver shorthand for loopback
        ("http://[::1]/hook", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "is a loopback address"),
        ("http://[::ffff:10.0.0.5]/hook", "is a private address"),
        ("http://10.0.0.5/hook", "webhook_url: 10.0.0.5 is a private address"),
        ("https://192.168.1.10/hook", "is a private address"),
        ("http://172.16.0.1/hook", "is a private address"),
        ("http://[fd00::1]/hook", "is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[fe80::1]/hook", "is a link-local address"),
        ("http://224.0.0.1/hook", "is a multicast address"),
        ("http://0.0.0.0/hook", "is an unspecified address"),
        ("http://100.64.0.1/hook", "is not a globally routable address"),  # carrier-grade NAT
        ("http://[2002:a00:1::]/hook", "is a private address"),  # 6to4 wrapping 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(WebhookTargetRefusedError, match=re.escape(reason)):
        check_webhook_url(url, [])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://8.8.8.8/hook", "scheme 'ftp' is not http or https"),
        ("file:///etc/passwd", "scheme 'file' is not http or https"),
        ("http:///hook", "a host is required"),
        ("http://8.8.8.8:99999/hook", "not a valid URL"),
    ],
)
def test_bad_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(WebhookTargetRefusedError, match=reason):
        check_webhook_url(url, [])


def test_the_refusal_is_a_value_error() -> None:
    assert issubclass(WebhookTargetRefusedError, ValueError)


def test_public_addresses_are_allowed() -> None:
    check_webhook_url("https://8.8.8.8/hook", [])
    check_webhook_url("https://[2606:4700:4700::1111]/hook", [])
    assert checked_addresses("http://1.1.1.1:8080/x", []) == [ipaddress.ip_address("1.1.1.1")]


def test_a_public_name_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"))
    assert [str(a) for a in checked_addresses("https://hooks.example.com/in", [])] == [
        "93.184.215.14",
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    ]


def test_a_name_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("93.184.215.14", "10.1.2.3"))
    with pytest.raises(WebhookTargetRefusedError, match=r"hooks\.example\.com \(10\.1\.2\.3\) is a private address"):
        check_webhook_url("https://hooks.example.com/in", [])


def test_a_name_resolving_to_metadata_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("169.254.169.254"))
    with pytest.raises(WebhookTargetRefusedError, match="link-local"):
        check_webhook_url("http://metadata.example.com/", [])


def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _unresolvable)
    with pytest.raises(WebhookTargetRefusedError, match=re.escape("nowhere.example.com does not resolve")):
        check_webhook_url("https://nowhere.example.com/hook", [])


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://127.0.0.1:9000/hook", ["127.0.0.1"]),
        ("http://[::1]:9000/hook", ["::1"]),
        ("http://[::1]:9000/hook", ["[0:0::1]"]),  # the same address, spelled differently
        ("http://Receiver.Internal./hook", ["receiver.internal"]),  # case and a trailing dot do not matter
        ("http://10.0.0.5/hook", ["other.example", "10.0.0.5"]),
    ],
)
def test_allow_listed_hosts_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str, allow: list[str]) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _unresolvable)  # an allow-listed host is not even resolved
    check_webhook_url(url, allow)
    assert checked_addresses(url, allow) == []


def test_the_allow_list_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver("10.0.0.7"))
    with pytest.raises(WebhookTargetRefusedError, match="private"):
        check_webhook_url("http://evil.receiver.internal/hook", ["receiver.internal"])
    with pytest.raises(WebhookTargetRefusedError, match=re.escape("10.0.0.6 is a private address")):
        check_webhook_url("http://10.0.0.6/hook", ["10.0.0.5"])
