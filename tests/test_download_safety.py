"""Address policies, the checked resolver, body sniffing, host sharding: no traffic leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import pickle
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.core.sniff import NotMedia, classify
from beam_gbif.io.fetch import DownloadSettings, FetchEngine
from beam_gbif.io.hosts import CircuitBreaker, host_shard_key, host_shards, shard_share, url_host
from beam_gbif.io.safety import (
    AddressPolicy,
    AllowOnly,
    CheckedResolver,
    PublicAndPrivate,
    PublicOnly,
    RefusedAddress,
    check_host,
    policy_for,
)
from beam_gbif.io.store import store_for
from beam_gbif.testing.media_server import image_bytes

LOOPBACK_ONLY = AllowOnly(["127.0.0.1"])
ALLOW_PRIVATE_HOSTS = policy_for(True)


class ScriptedLookup(AbstractResolver):
    """DNS answers from a script, never a real lookup: each call takes the next address, the last one repeats."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        self.calls.append(host)
        address = self.addresses.pop(0) if len(self.addresses) > 1 else self.addresses[0]
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def fetch_one(url: str, policy: AddressPolicy, lookup: ScriptedLookup, root: Path, ttl: float = 60.0) -> MediaRecord:
    """One record through the FetchEngine, its DNS answers scripted by ``lookup`` (all of them loopback)."""
    settings = DownloadSettings(str(root), address_policy=policy, max_retries=0, timeout=5.0)

    async def scenario() -> MediaRecord:
        with ThreadPoolExecutor(2) as executor:
            resolver = CheckedResolver(policy, ttl=ttl, lookup=lookup)
            engine = FetchEngine(settings, policy, store_for(str(root)), executor, resolver=resolver)
            await engine.open()
            try:
                result, _ = await engine.handle(MediaRecord(url=url, label="sp", occurrence_key=1), ("host", 0), {})
            finally:
                await engine.close()
            return result

    return asyncio.run(scenario())


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.100.100.200", "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1",
                                     "224.0.0.1", "100.64.0.1"])
def test_public_only_refuses_internal_addresses(address):
    assert not PublicOnly().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "193.0.6.139", "2001:4860:4860::8888"])
def test_public_only_allows_global_addresses(address):
    # Only the policy's decision is tested: nothing connects to these addresses.
    assert PublicOnly().allows(ipaddress.ip_address(address))


def test_allow_only_and_policy_for():
    policy = pickle.loads(pickle.dumps(AllowOnly(["127.0.0.1"])))
    assert policy.allows(ipaddress.ip_address("127.0.0.1"))
    assert policy.allows(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not policy.allows(ipaddress.ip_address("127.0.0.2"))
    assert isinstance(policy_for(True), PublicAndPrivate) and isinstance(policy_for(False), PublicOnly)


def test_checked_resolver_filters_names_and_literals_without_connecting():
    async def scenario():
        resolver = CheckedResolver(PublicOnly())
        with pytest.raises(RefusedAddress, match="localhost resolves to"):
            await check_host("localhost", 80, PublicOnly(), resolver)
        with pytest.raises(RefusedAddress, match="127.0.0.2"):
            await check_host("127.0.0.2", 80, AllowOnly(["127.0.0.1"]), resolver)
        allowing = CheckedResolver(AllowOnly(["127.0.0.1"]))
        answers = await allowing.resolve("localhost", 80, 0)
        assert answers and all(a["host"] == "127.0.0.1" for a in answers)
        await resolver.close()
        await allowing.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "fc00::1",
                                     "fd12:3456::1", "::ffff:10.0.0.1", "8.8.8.8"])
def test_allow_private_hosts_opens_loopback_private_and_public_addresses(address):
    assert ALLOW_PRIVATE_HOSTS.allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.1.1", "fe80::1", "fe80::1%eth0", "fd00:ec2::254",
                                     "::ffff:169.254.169.254", "100.100.100.200", "0.0.0.0", "::", "224.0.0.1", "ff02::1"])
def test_allow_private_hosts_still_refuses_link_local_and_metadata_addresses(address):
    assert not ALLOW_PRIVATE_HOSTS.allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("policy", [PublicOnly(), ALLOW_PRIVATE_HOSTS], ids=["public_only", "allow_private_hosts"])
@pytest.mark.parametrize("address", [
    "fec0::1", "fec0::a00:1",  # deprecated site-local: always
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:a00:1::1", "2002:c0a8:101::1",  # 6to4 of 127.0.0.1, the metadata server, 10/8, 192.168/16
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b:1::808:808",  # NAT64 of the same; local-use NAT64
])
def test_ipv6_forms_reaching_internal_ipv4_space_are_refused(policy, address):
    assert not policy.allows(ipaddress.ip_address(address))


def test_6to4_of_a_public_ipv4_address_is_still_allowed():
    # The decision only: nothing connects to it.
    assert PublicOnly().allows(ipaddress.ip_address("2002:808:808::1"))


@pytest.mark.parametrize("policy", [PublicOnly(), ALLOW_PRIVATE_HOSTS], ids=["public_only", "allow_private_hosts"])
@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.Google.Internal", "metadata.google.internal.",
                                  "metadata", "Metadata.", "METADATA"])
def test_metadata_host_names_are_refused_by_name_before_any_lookup(media, tmp_path, policy, name):
    # The scripted DNS answers loopback, which --allow_private_hosts allows: only the name can refuse it.
    lookup = ScriptedLookup("127.0.0.1")
    media.reset_hits()
    result = fetch_one(f"http://{name}:{media.port}/media/meta.jpg", policy, lookup, tmp_path / "ds")
    assert result.status == Status.FAILED_REFUSED and "metadata" in result.error
    assert lookup.calls == [], "refused by name, without a DNS lookup"
    assert media.total_hits == 0


def test_a_redirect_to_the_metadata_server_is_refused_by_name(media, tmp_path):
    lookup = ScriptedLookup("127.0.0.1")
    media.reset_hits()
    url = media.fault_url(f"redirect_to?location=http://metadata.google.internal:{media.port}/media/meta.jpg")
    result = fetch_one(url, ALLOW_PRIVATE_HOSTS, lookup, tmp_path / "ds")
    assert result.status == Status.FAILED_REFUSED and "metadata" in result.error
    assert lookup.calls == [] and media.total_hits == 1, "only the redirect itself was fetched"


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001", "127.1", "127.0.0.1.",
                                  "a@127.0.0.1", "media.example.org@127.0.0.1"],
                         ids=["decimal", "octal", "hex", "hex_whole", "short", "trailing_dot", "userinfo", "userinfo_disguise"])
def test_numeric_and_userinfo_host_forms_are_refused_without_any_connection(media, tmp_path, host):
    # Each form means 127.0.0.1, which this policy allows and the scripted DNS answers: only the form can refuse it.
    lookup = ScriptedLookup("127.0.0.1")
    media.reset_hits()
    result = fetch_one(f"http://{host}:{media.port}/media/numeric.jpg", LOOPBACK_ONLY, lookup, tmp_path / "ds")
    assert result.status == Status.FAILED_REFUSED, result.error
    assert lookup.calls == [] and media.total_hits == 0, "refused before any lookup or connection"


def test_dns_rebinding_between_check_and_connect_is_refused(media, tmp_path):
    # Allowed when check_host looks, another (loopback) address, refused by the policy, when the connector does.
    # Should the connector stop using the checking resolver, it would resolve localhost itself and download.
    lookup = ScriptedLookup("127.0.0.1", "127.0.0.2")
    media.reset_hits()
    result = fetch_one(f"http://localhost:{media.port}/media/rebind.jpg", LOOPBACK_ONLY, lookup, tmp_path / "ds", ttl=0.0)
    assert result.status == Status.FAILED_REFUSED and "127.0.0.2" in result.error, result.error
    assert lookup.calls == ["localhost", "localhost"], "checked once by check_host, once by the connector"
    assert media.total_hits == 0


@pytest.mark.parametrize("ext, mime", [("jpg", "image/jpeg"), ("png", "image/png"), ("gif", "image/gif"), ("webp", "image/webp"),
                                       ("tif", "image/tiff"), ("bmp", "image/bmp")])
def test_images_sniff_as_still_images(ext, mime):
    assert classify(image_bytes("x", ext), "StillImage") == (ext, mime)


@pytest.mark.parametrize("body, reason", [(b"<!DOCTYPE html><html>", "HTML"), (b"  <html><body>x", "HTML"),
                                          (b'{"error": "not found"}', "JSON"), (b"", "empty"),
                                          (b"\x00\x01\x02\x03garbage", "not a known StillImage"),
                                          (b"ID3\x03\x00\x00\x00", "audio/mpeg, not StillImage")])
def test_non_images_are_refused_with_a_reason(body, reason):
    with pytest.raises(NotMedia, match=reason):
        classify(body, "StillImage")


def test_sound_and_video_magic():
    assert classify(b"ID3\x03\x00\x00\x00\x00", "Sound") == ("mp3", "audio/mpeg")
    assert classify(b"RIFF\x00\x00\x00\x00WAVEfmt ", "Sound") == ("wav", "audio/wav")
    assert classify(b"OggS\x00\x02", "Sound") == ("ogg", "audio/ogg")
    assert classify(b"OggS\x00\x02", "MovingImage") == ("ogv", "video/ogg")
    assert classify(b"\x00\x00\x00\x18ftypisom\x00\x00", "MovingImage") == ("mp4", "video/mp4")
    assert classify(b"\x00\x00\x00\x18ftypheic\x00\x00", "StillImage") == ("heic", "image/heic")
    with pytest.raises(NotMedia):
        classify(image_bytes("x"), "Sound")


def test_host_shards_split_the_per_host_limit_exactly():
    for limit in (1, 3, 8, 10, 16, 256):
        shards = host_shards(limit)
        assert 1 <= shards <= limit
        shares = [shard_share(limit, shards, s) for s in range(shards)]
        assert sum(shares) == limit and min(shares) >= 1
    assert url_host("https://Images.Example.org:8443/a.jpg") == "images.example.org:8443"
    assert url_host("not a url") == ""
    key = host_shard_key("https://a.org/x.jpg", 8)
    assert key == host_shard_key("https://a.org/x.jpg", 8) and 0 <= key[1] < 8


def test_circuit_breaker_opens_after_consecutive_failures_and_closes_on_success():
    breaker = CircuitBreaker(threshold=3, cooldown=10, max_cooldown=20)
    breaker.record(False)
    breaker.record(False)
    assert breaker.wait_time() == 0
    breaker.record(False)
    assert 9 < breaker.wait_time() <= 10
    breaker.record(False)  # half-open: one more failure doubles the pause
    assert 19 < breaker.wait_time() <= 20
    breaker.record(True)
    assert breaker.failures == 0 and breaker.trips == 0 and breaker.wait_time() == 0
