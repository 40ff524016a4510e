"""Which webhook URLs the service may call: http(s) to hosts whose every address is globally routable, so a job's
`webhook_url` cannot make the API reach loopback, the private network or a cloud metadata endpoint (SSRF).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
# IPv6 ranges that carry an IPv4 address in their last 32 bits (NAT64 well-known and local-use prefixes).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class WebhookTargetRefusedError(ValueError):
    """A webhook URL the service will not call; the message names the reason."""


def check_webhook_url(url: str, allow_hosts: Sequence[str]) -> None:
    """Return when `url` may be called; raise WebhookTargetRefusedError naming why not."""
    checked_addresses(url, allow_hosts)


def checked_addresses(url: str, allow_hosts: Sequence[str]) -> list[IPAddress]:
    """The addresses `url`'s host resolves to, every one of them allowed ([] when the host is allow-listed).

    Raises WebhookTargetRefusedError like `check_webhook_url`. Connecting to one of the returned addresses (rather
    than resolving again) keeps a DNS answer that changes between check and connect from reaching a refused one.
    """
    host, port = _host_and_port(url)
    if _is_allow_listed(host, allow_hosts):
        return []
    addresses = _resolve(host, port)
    for address in addresses:
        reason = _refusal(address)
        if reason:
            shown = host if _ip_literal(host) == address else f"{host} ({address})"
            raise WebhookTargetRefusedError(f"webhook_url: {shown} is {reason}")
    return addresses


def _host_and_port(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port out of range or not a number
    except ValueError as exc:
        raise WebhookTargetRefusedError(f"webhook_url: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise WebhookTargetRefusedError(f"webhook_url: scheme {scheme or '(none)'!r} is not http or https")
    host = _normalize_host(parts.hostname or "")
    if not host:
        raise WebhookTargetRefusedError("webhook_url: a host is required")
    return host, port if port is not None else _DEFAULT_PORTS[scheme]


def _normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _is_allow_listed(host: str, allow_hosts: Sequence[str]) -> bool:
    literal = _ip_literal(host)
    for allowed in allow_hosts:
        allowed = _normalize_host(allowed)
        if allowed == host or (literal is not None and _ip_literal(allowed) == literal):
            return True
    return False


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    # Forms like "127.1" or "2130706433" are not literals to `ipaddress` but resolve to loopback: the resolver
    # sees them, so they are checked like any name.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookTargetRefusedError(f"webhook_url: {host} does not resolve") from exc
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone ("%eth0")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookTargetRefusedError(f"webhook_url: {host} does not resolve to an IP address")
    return addresses


def _refusal(address: IPAddress) -> str | None:
    """Why `address` may not be called, or None when it is globally routable."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket
            return _refusal(address.ipv4_mapped)
        for embedded in _embedded_ipv4(address):
            reason = _refusal(embedded)
            if reason:
                return reason
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:  # before private: 169.254.0.0/16 (cloud metadata) is both
        return "a link-local address"
    if address.is_multicast:  # is_global is True for global multicast, which is still no webhook target
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address reaches through: 6to4, Teredo, NAT64."""
    found = [address.sixtofour] if address.sixtofour is not None else []
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in network for network in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found
