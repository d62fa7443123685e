"""Which addresses a media request may connect to: resolve, check, then connect to the checked address.

A cloud worker must never fetch its metadata server or a private service because a publisher's
URL (or a redirect) points there. Host names are resolved by ``CheckedResolver``, which drops
every address the policy refuses, and aiohttp connects only to what it returns; IP literals
(which aiohttp does not resolve) are checked by ``check_host`` before any request.
"""

from __future__ import annotations

import asyncio
import ipaddress
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


class RefusedAddress(Exception):
    """A host resolving only to addresses the policy refuses (not an OSError, so aiohttp does not wrap it)."""


def _plain(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AddressPolicy:
    """Decides whether one IP address may be connected to. Subclasses must stay picklable."""

    def allows(self, address: IPAddress) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class PublicOnly(AddressPolicy):
    """The production policy: global unicast addresses only."""

    def allows(self, address: IPAddress) -> bool:
        address = _plain(address)
        if address in METADATA_ADDRESSES:
            return False
        return not (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                    or address.is_reserved or address.is_unspecified or not address.is_global)

    def describe(self) -> str:
        return "public addresses only (--allow_private_hosts is off)"


class AllowAll(AddressPolicy):
    """``--allow_private_hosts``: any address (local tests and private media servers)."""

    def allows(self, address: IPAddress) -> bool:
        return True

    def describe(self) -> str:
        return "any address"


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
    return AllowAll() if allow_private_hosts else PublicOnly()


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class CheckedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, keeps only allowed addresses, caches answers briefly."""

    def __init__(self, policy: AddressPolicy, ttl: float = 60.0) -> None:
        self.policy = policy
        self.ttl = ttl
        self._inner = DefaultResolver()
        self._cache: dict[tuple[str, int, int], tuple[float, list[Any]]] = {}
        self._pending: dict[tuple[str, int, int], asyncio.Task] = {}

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
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
    """Raises RefusedAddress unless ``host`` may be connected to; resolves names (no connection is made)."""
    literal = ip_literal(host)
    if literal is not None:
        if not policy.allows(literal):
            raise RefusedAddress(f"address {literal} refused by the address policy ({policy.describe()})")
        return
    await resolver.resolve(host, port, socket.AF_UNSPEC)
