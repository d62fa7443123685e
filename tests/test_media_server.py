"""The media server: valid, unique, deterministic images; every fault route; hit counting."""

from __future__ import annotations

import http.client
import io
import json
import time
import urllib.error
import urllib.request

import pytest

from beam_gbif.core.sniff import sniff
from beam_gbif.testing.media_server import MediaServer, image_bytes


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize("ext, kind", [("jpg", "image/jpeg"), ("png", "image/png"), ("gif", "image/gif"), ("webp", "image/webp"),
                                       ("tif", "image/tiff"), ("bmp", "image/bmp")])
def test_images_are_valid_unique_and_deterministic(media, ext, kind):
    status, headers, body = fetch(media.url("cat", ext))
    assert status == 200 and headers["Content-Type"].startswith(kind)
    assert body == image_bytes("cat", ext) == media.body("cat", ext)
    assert abs(len(body) - 12_000) < 1_000
    assert sniff(body[:64])[1] == kind
    assert image_bytes("dog", ext) != body
    pil = pytest.importorskip("PIL.Image")
    with pil.open(io.BytesIO(body)) as image:
        image.load()
        assert image.size == (1, 1)


def test_size_is_configurable(media):
    assert len(fetch(media.url("big") + "?bytes=200000")[2]) >= 200_000
    assert len(image_bytes("big", "jpg", 200_000)) >= 200_000


def test_hits_are_counted_per_path(media):
    media.reset_hits()
    fetch(media.url("a"))
    fetch(media.url("a"))
    fetch(media.url("b"))
    assert media.hits == {"/media/a.jpg": 2, "/media/b.jpg": 1} and media.total_hits == 3


def test_status_flaky_and_ratelimit(media):
    assert fetch(media.fault_url("status/404/x.jpg"))[0] == 404
    assert fetch(media.fault_url("status/503/x.jpg"))[0] == 503
    assert [fetch(media.fault_url("flaky/2/f.jpg"))[0] for _ in range(3)] == [500, 500, 200]
    status, headers, _ = fetch(media.fault_url("ratelimit/1/7/r.jpg"))
    assert status == 429 and headers["Retry-After"] == "7"
    assert fetch(media.fault_url("ratelimit/1/7/r.jpg"))[0] == 200


def test_pages_instead_of_images(media):
    status, headers, body = fetch(media.fault_url("html/x.jpg"))
    assert status == 200 and body.lstrip().startswith(b"<!DOCTYPE html")
    status, headers, body = fetch(media.fault_url("json/x.jpg"))
    assert status == 200 and json.loads(body)["error"]
    status, headers, body = fetch(media.fault_url("wrong_type/x.jpg"))
    assert headers["Content-Type"].startswith("text/plain") and body == image_bytes("x")


def test_broken_bodies(media):
    with pytest.raises(http.client.IncompleteRead):
        fetch(media.fault_url("truncated/x.jpg"))
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        fetch(media.fault_url("reset/x.jpg"))


def test_slow_routes(media):
    started = time.monotonic()
    assert fetch(media.fault_url("slow_first_byte/0.3/x.jpg"))[2] == image_bytes("x")
    assert fetch(media.fault_url("slow_body/0.3/x.jpg"))[2] == image_bytes("x")
    assert time.monotonic() - started >= 0.55  # the last of 20 body pauses comes after the last byte


def test_oversize_and_redirects(media):
    _, headers, body = fetch(media.fault_url("oversize/300000/x.jpg"))
    assert int(headers["Content-Length"]) == len(body) >= 300_000 and body.startswith(b"\xff\xd8\xff")
    _, headers, body = fetch(media.fault_url("oversize_stream/300000/x.jpg"))
    assert "Content-Length" not in headers and len(body) >= 300_000
    status, headers, _ = fetch(media.fault_url("redirect/2/x.jpg"))
    assert status == 301 and headers["Location"] == "/redirect/1/x.jpg"
    status, headers, _ = fetch(media.fault_url("redirect/1/x.jpg"))
    assert headers["Location"] == "/media/x.jpg"
    status, headers, _ = fetch(media.fault_url("redirect_to?location=ftp://example.invalid/x"))
    assert status == 301 and headers["Location"] == "ftp://example.invalid/x"


def test_latency_applies_to_every_request():
    with MediaServer(latency=0.2) as slow:
        started = time.monotonic()
        fetch(slow.url("x"))
        assert time.monotonic() - started >= 0.2
        assert slow.base_url.startswith("http://127.0.0.1:")
