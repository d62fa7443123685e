"""Address policies, the checked resolver, body sniffing, host sharding: no traffic leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import pickle

import pytest

from beam_gbif.core.sniff import NotMedia, classify
from beam_gbif.io.hosts import CircuitBreaker, host_shard_key, host_shards, shard_share, url_host
from beam_gbif.io.safety import AllowAll, AllowOnly, CheckedResolver, PublicOnly, RefusedAddress, check_host, policy_for
from beam_gbif.testing.media_server import image_bytes


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
    assert isinstance(policy_for(True), AllowAll) and isinstance(policy_for(False), PublicOnly)


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
