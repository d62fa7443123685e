"""Which addresses a media request may connect to: resolve, check, then connect to the checked address.

A cloud worker must never fetch its metadata server or a private service because a publisher's
URL (or a redirect) points there. Host names are resolved by ``CheckedResolver``, which drops
every address the policy refuses, and aiohttp connects only to what it returns; IP literals
(which aiohttp does not resolve) are checked by ``check_host`` before any request. Some hosts
are refused by their name alone, before any lookup: the metadata server's names, and numbers
that are not canonical IP addresses (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``),
which resolvers read in different ways.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints that are not covered by the link-local/private ranges everywhere.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                                ipaddress.ip_address("100.100.100.200")})
# GCE's metadata server by name: refused by name, so no lookup (and no rebinding) is involved.
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})
# Loopback is not among these: ``is_loopback`` covers 127.0.0.0/8 and ::1.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated (RFC 3879), still routed inside some networks
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the last 32 bits are an IPv4 address (RFC 6052)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use translation (RFC 8215): any IPv4 space, never public
# A last label that is a number (decimal, octal or hex): inet_aton reads such a host as an IPv4 address.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


class RefusedAddress(Exception):
    """A host resolving only to addresses the policy refuses (not an OSError, so aiohttp does not wrap it)."""


def _plain(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 (2002::/16) or NAT64 (64:ff9b::/96) address reaches, else None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    return not (address in METADATA_ADDRESSES or address.is_private or address.is_loopback or address.is_link_local
                or address.is_multicast or address.is_reserved or address.is_unspecified or not address.is_global)


def never_allowed(address: IPAddress) -> bool:
    """Refused by every built-in policy: metadata, link-local, unspecified, multicast, site-local, and IPv6
    forms that reach IPv4 space unless the IPv4 address they reach is public (checked here, not left to
    ``ipaddress``, whose ranges differ between Python versions)."""
    address = _plain(address)
    if (address in METADATA_ADDRESSES or address.is_link_local or address.is_unspecified or address.is_multicast
            or address in _SITE_LOCAL or address in _NAT64_LOCAL):
        return True
    inner = embedded_ipv4(address)
    return inner is not None and not _is_public(inner)


class AddressPolicy:
    """Decides whether one IP address may be connected to. Subclasses must stay picklable."""

    def allows(self, address: IPAddress) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class PublicOnly(AddressPolicy):
    """The production policy: global unicast addresses only."""

    def allows(self, address: IPAddress) -> bool:
        return not never_allowed(address) and _is_public(_plain(address))

    def describe(self) -> str:
        return "public addresses only (--allow_private_hosts is off)"


class PublicAndPrivate(AddressPolicy):
    """``--allow_private_hosts`` (local tests, private media servers): public, loopback and private ranges
    (10/8, 172.16/12, 192.168/16, fc00::/7); never link-local or cloud metadata addresses."""

    def allows(self, address: IPAddress) -> bool:
        if never_allowed(address):
            return False
        address = _plain(address)
        return address.is_loopback or any(address in n for n in PRIVATE_NETWORKS) or _is_public(address)

    def describe(self) -> str:
        return "public, loopback and private addresses (--allow_private_hosts); never link-local or metadata"


class AllowOnly(AddressPolicy):
    """Exactly these addresses or networks, e.g. ``AllowOnly(["127.0.0.1"])`` for a test."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def allows(self, address: IPAddress) -> bool:
        address = _plain(address)
        return any(address.version == n.version and address in n for n in self.networks)

    def describe(self) -> str:
        return "only " + ", ".join(str(n) for n in self.networks)


def policy_for(allow_private_hosts: bool) -> AddressPolicy:
    return PublicAndPrivate() if allow_private_hosts else PublicOnly()


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refuse_by_name(host: str) -> None:
    """Raises RefusedAddress for a host refused by its name alone, before any lookup.

    The metadata server's names (any case, with or without the trailing dot of a fully qualified
    name), and hosts that look like an IP address but are not a canonical one (a last label that
    is a number, or a colon): aiohttp connects to such a host without asking the resolver and the
    OS reads ``2130706433`` or ``0177.0.0.1`` as 127.0.0.1, so only a refusal keeps check and
    connection in agreement (canonical IP literals never get here: ``check_host`` checks them).
    """
    name = host.rstrip(".").lower()
    if name in METADATA_NAMES:
        raise RefusedAddress(f"host {host} is a cloud metadata server, refused by name")
    if ":" in name or _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        raise RefusedAddress(f"host {host} looks like an IP address but is not a canonical one, refused (resolvers read it differently)")


class CheckedResolver(AbstractResolver):
    """Refuses by name (``refuse_by_name``), resolves with ``lookup`` (aiohttp's default resolver unless a
    test injects one), keeps only allowed addresses, caches answers for ``ttl`` seconds."""

    def __init__(self, policy: AddressPolicy, ttl: float = 60.0, lookup: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.ttl = ttl
        self._inner = lookup or DefaultResolver()
        self._cache: dict[tuple[str, int, int], tuple[float, list[Any]]] = {}
        self._pending: dict[tuple[str, int, int], asyncio.Task] = {}
        # check_host's decisions (host, port, policy) → until when; the connector still resolves through this resolver.
        self.allowed_until: dict[tuple[str, int, AddressPolicy], float] = {}

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
        refuse_by_name(host)
        key = (host, port, family)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return self._allowed(host, cached[1])
        # One lookup per host at a time: hundreds of requests to one new host share it. It runs as
        # its own task, so a waiter that is cancelled (its record timed out) never cancels it for
        # the others; a failed lookup is not cached, so the next request looks the host up again.
        lookup = self._pending.get(key)
        if lookup is None:
            lookup = self._pending[key] = asyncio.ensure_future(self._inner.resolve(host, port, family))
            lookup.add_done_callback(lambda done: self._settled(key, done))
        answers = await asyncio.shield(lookup)
        return self._allowed(host, answers)

    def _settled(self, key: tuple[str, int, int], lookup: asyncio.Task) -> None:
        del self._pending[key]
        if not lookup.cancelled() and lookup.exception() is None:  # exception(): retrieved even if every waiter left
            self._cache[key] = (time.monotonic() + self.ttl, lookup.result())

    def _allowed(self, host: str, answers: list[Any]) -> list[Any]:
        allowed = [a for a in answers if self.policy.allows(ipaddress.ip_address(a["host"]))]
        if not allowed:
            addresses = ", ".join(sorted({a["host"] for a in answers}))
            raise RefusedAddress(f"host {host} resolves to {addresses}, refused by the address policy ({self.policy.describe()})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


async def check_host(host: str, port: int, policy: AddressPolicy, resolver: CheckedResolver) -> None:
    """Raises RefusedAddress unless ``host`` may be connected to; resolves names (no connection is made).

    An allowed host is not checked again for the resolver's ``ttl`` (a refusal is never remembered): the
    connection itself still resolves through ``resolver``, which drops refused addresses, so an answer
    that changes after this check (DNS rebinding) is refused there."""
    key = (host, port, policy)
    now = time.monotonic()
    if resolver.allowed_until.get(key, 0.0) > now:
        return
    literal = ip_literal(host)
    if literal is not None:
        if not policy.allows(literal):
            raise RefusedAddress(f"address {literal} refused by the address policy ({policy.describe()})")
    else:
        await resolver.resolve(host, port, socket.AF_UNSPEC)
    resolver.allowed_until[key] = now + resolver.ttl
