"""A local media server: real image bytes, configurable latency and every fault the downloader must survive.

    with MediaServer(latency=0.05) as media:
        url = media.url("abc")            # http://127.0.0.1:PORT/media/abc.jpg, a valid JPEG unique to "abc"
        media.hits["/media/abc.jpg"]      # requests seen per path; media.total_hits

Routes (``<name>`` is any file-name-like string; the body is unique and deterministic per name):

    /media/<name>.<jpg|png|gif|webp|tif|bmp>   a valid image of that type (~``image_bytes``; ``?bytes=N`` overrides)
    /status/<code>/<name>.jpg                  always answers ``code`` (404, 500, 503, ...); ``?delay=S`` after S seconds
    /flaky/<n>/<name>.jpg                      500 for the first n requests of this path, then the image
    /ratelimit/<n>/<seconds>/<name>.jpg        429 + ``Retry-After: seconds`` for the first n requests, then the image
    /html/<name>.jpg   /json/<name>.jpg        200 with an HTML page / a JSON error body
    /wrong_type/<name>.jpg                     a real JPEG served as ``text/plain``
    /truncated/<name>.jpg                      Content-Length of the whole image, half of it sent, then closed
    /reset/<name>.jpg                          part of a chunked body, then a TCP reset
    /slow_first_byte/<seconds>/<name>.jpg      headers only after ``seconds``
    /slow_body/<seconds>/<name>.jpg            the body trickles over ``seconds``
    /oversize/<nbytes>/<name>.jpg              a valid JPEG of nbytes with its Content-Length
    /oversize_stream/<nbytes>/<name>.jpg       the same, chunked (no Content-Length): the limit must hold while streaming
    /redirect/<n>/<name>.jpg                   a chain of n 301s ending at /media/<name>.jpg
    /redirect_to?location=<url>                one 301 to any location (ftp://..., http://127.0.0.2:PORT/...)
    /gen/<name>.<jpg|png|webp>?w=&h=&orientation=&gps=1&mode=&cut=F
                                               a real picture (testing/images.py) of w × h as displayed, stored for an EXIF
                                               orientation, with GPS tags, in a mode (RGB, L, CMYK, P, PA, RGBA); ``cut``: only
                                               that fraction of the body, with a matching Content-Length (sniffs, does not decode)
    /bomb/<name>.png                           a tiny PNG whose header claims 100,000 × 100,000 pixels
    /photos/<status>-<id>/<version>.jpg        published sizes as iNaturalist's: original 2000 × 1500, large 1024, medium 500,
                                               small 240 (longer side); status > 0: every version but the original answers it

Run it as a separate process (benchmarks, demos): ``python -m beam_gbif.testing.media_server --port 8080 --latency 0.05``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import socket
import struct
import threading
import time
import zlib
from typing import Any

from aiohttp import web

from beam_gbif.core.sniff import MIME_BY_EXT
from beam_gbif.testing.images import bomb_png, make_image
from beam_gbif.testing.serving import AppThread

# 1×1 images written by Pillow once, embedded so the package needs no imaging library.
_JPEG_1PX = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a181616183123251d283a333d3c3933383740485c4e40"
    "4457453738506d51575f626768673e4d71797064785c656763ffdb0043011112121815182f1a1a2f634238426363636363636363636363636363636363636363"
    "636363636363636363636363636363636363636363636363636363636363ffc00011080001000103012200021101031101ffc4001f0000010501010101010100"
    "000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a10823"
    "42b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a"
    "838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1"
    "f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000000102030405060708090a0bffc400b5110002010204040304070504040001027700"
    "0102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a43444546474849"
    "4a535455565758595a636465666768696a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4"
    "c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f00c4a28a2b8cef3fffd9"
)
_WEBP_VP8L_1PX = bytes.fromhex("2f0000000007509ee2d5a3ff8188e87f0000")  # payload of the VP8L chunk
_TIFF_1PX = bytes.fromhex(
    "49492a00080000000a0000010400010000000100000001010400010000000100000002010300030000008600000003010300010000000100000006010300010000"
    "000200000011010400010000008c0000001501030001000000030000001601040001000000010000001701040001000000030000001c010300010000000100000000"
    "000000080008000800783c1e"
)

DEFAULT_IMAGE_BYTES = 12_000
# /photos/...: the longer side of each published version (iNaturalist's sizes; the original is larger than all).
PHOTO_VERSION_SIDES = {"original": 2000, "large": 1024, "medium": 500, "small": 240}


def _filler(name: str, size: int) -> bytes:
    """Deterministic bytes naming ``name``, so every image is unique and reproducible."""
    seed = hashlib.blake2b(name.encode("utf-8"), digest_size=32).hexdigest().encode("ascii")
    head = f"beam-gbif test image {name} ".encode()
    body = head + seed * (size // len(seed) + 1)
    return body[:max(size, 0)]


def jpeg_bytes(name: str, size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    """A valid 1×1 JPEG of about ``size`` bytes, padded with COM segments carrying ``name``."""
    pad = max(size - len(_JPEG_1PX), len(name) + 24)
    filler = _filler(name, pad)
    segments = []
    while filler:
        part, filler = filler[:65000], filler[65000:]
        segments.append(b"\xff\xfe" + struct.pack(">H", len(part) + 2) + part)
    return _JPEG_1PX[:20] + b"".join(segments) + _JPEG_1PX[20:]  # after SOI + APP0 (JFIF)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(name: str, size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00\x78\x3c\x1e"))
    text = _png_chunk(b"tEXt", b"Comment\x00" + _filler(name, max(size - 80, len(name) + 24)))
    return b"\x89PNG\r\n\x1a\n" + ihdr + text + idat + _png_chunk(b"IEND", b"")


def gif_bytes(name: str, size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x78\x3c\x1e\x00\x00\x00"
    filler = _filler(name, max(size - 60, len(name) + 24))
    blocks = b"".join(bytes([len(filler[i:i + 255])]) + filler[i:i + 255] for i in range(0, len(filler), 255))
    comment = b"\x21\xfe" + blocks + b"\x00"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + comment + image + b"\x3b"


def webp_bytes(name: str, size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")

    # Extended format (VP8X) so the extra metadata chunk carrying the name is legal.
    vp8x = chunk(b"VP8X", bytes([0x08, 0, 0, 0]) + (0).to_bytes(3, "little") + (0).to_bytes(3, "little"))  # EXIF flag, 1×1
    exif = chunk(b"EXIF", b"II*\x00\x08\x00\x00\x00\x00\x00" + _filler(name, max(size - 80, len(name) + 24)))
    body = b"WEBP" + vp8x + chunk(b"VP8L", _WEBP_VP8L_1PX) + exif
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_bytes(name: str, size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    # Everything in a TIFF is reached through offsets, so trailing bytes are ignored by readers.
    return _TIFF_1PX + _filler(name, max(size - len(_TIFF_1PX), len(name) + 24))


def bmp_bytes(name: str, size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    pixels = b"\x1e\x3c\x78\x00"  # one BGR pixel, row padded to 4 bytes
    filler = _filler(name, max(size - 58, len(name) + 24))
    offset = 14 + 40
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels) + len(filler), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels + filler


MAKERS = {"jpg": jpeg_bytes, "png": png_bytes, "gif": gif_bytes, "webp": webp_bytes, "tif": tiff_bytes, "bmp": bmp_bytes}


def image_bytes(name: str, ext: str = "jpg", size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    """The exact bytes the server sends for ``/media/<name>.<ext>`` (tests compare files with them)."""
    return MAKERS[ext](name, size)


class MediaServer:
    """The aiohttp media server in a background thread with its own event loop, on 127.0.0.1 and a free port."""

    def __init__(self, latency: float = 0.0, image_size: int = DEFAULT_IMAGE_BYTES, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency = latency
        self.image_size = image_size
        self.host = host
        self.port = port
        self.hits: collections.Counter[str] = collections.Counter()
        self.hit_times: list[tuple[float, str]] = []  # (time.monotonic(), path) of every request
        self.user_agents: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: AppThread | None = None

    # -- public helpers -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, name: str, ext: str = "jpg") -> str:
        return f"{self.base_url}/media/{name}.{ext}"

    def fault_url(self, path: str) -> str:
        """``fault_url("status/404/x.jpg")`` → the full URL of a fault route."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def times_of(self, path: str) -> list[float]:
        with self._lock:
            return [t for t, p in self.hit_times if p == path]

    def body(self, name: str, ext: str = "jpg") -> bytes:
        return image_bytes(name, ext, self.image_size)

    @property
    def total_hits(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def reset_hits(self) -> None:
        with self._lock:
            self.hits.clear()
            self.hit_times.clear()
            self.user_agents.clear()
            self.max_in_flight = 0

    # -- app ------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        @web.middleware
        async def count_and_delay(request: web.Request, handler: Any) -> web.StreamResponse:
            with self._lock:
                self.hits[request.path] += 1
                self.hit_times.append((time.monotonic(), request.path))
                self.user_agents[request.headers.get("User-Agent", "")] += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                return await handler(request)
            finally:
                with self._lock:
                    self.in_flight -= 1

        app = web.Application(middlewares=[count_and_delay])
        r = app.router
        r.add_get(r"/media/{name}.{ext:jpg|png|gif|webp|tif|bmp}", self._media)
        r.add_get(r"/status/{code:\d+}/{name}.jpg", self._status)
        r.add_get(r"/flaky/{n:\d+}/{name}.jpg", self._flaky)
        r.add_get(r"/ratelimit/{n:\d+}/{seconds:\d+}/{name}.jpg", self._ratelimit)
        r.add_get(r"/html/{name}.jpg", self._html)
        r.add_get(r"/json/{name}.jpg", self._json)
        r.add_get(r"/wrong_type/{name}.jpg", self._wrong_type)
        r.add_get(r"/truncated/{name}.jpg", self._truncated)
        r.add_get(r"/reset/{name}.jpg", self._reset)
        r.add_get(r"/slow_first_byte/{seconds}/{name}.jpg", self._slow_first_byte)
        r.add_get(r"/slow_body/{seconds}/{name}.jpg", self._slow_body)
        r.add_get(r"/oversize/{nbytes:\d+}/{name}.jpg", self._oversize)
        r.add_get(r"/oversize_stream/{nbytes:\d+}/{name}.jpg", self._oversize_stream)
        r.add_get(r"/redirect/{n:\d+}/{name}.jpg", self._redirect)
        r.add_get(r"/redirect_to", self._redirect_to)
        r.add_get(r"/gen/{name}.{ext:jpg|png|webp}", self._generated)
        r.add_get(r"/bomb/{name}.png", self._bomb)
        r.add_get(r"/photos/{status:\d+}-{id:\d+}/{version:original|large|medium|small}.jpg", self._photo_version)
        return app

    def _image(self, request: web.Request, ext: str = "jpg", content_type: str | None = None) -> web.Response:
        size = int(request.query.get("bytes", self.image_size))
        data = image_bytes(request.match_info["name"], ext, size)
        return web.Response(body=data, content_type=content_type or MIME_BY_EXT[ext])

    async def _media(self, request: web.Request) -> web.StreamResponse:
        return self._image(request, request.match_info["ext"])

    async def _status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        await asyncio.sleep(float(request.query.get("delay", 0)))
        return web.Response(status=code, text=f"status {code}\n")

    def _count(self, request: web.Request) -> int:
        with self._lock:
            return self.hits[request.path]

    async def _flaky(self, request: web.Request) -> web.StreamResponse:
        if self._count(request) <= int(request.match_info["n"]):
            return web.Response(status=500, text="flaky\n")
        return self._image(request)

    async def _ratelimit(self, request: web.Request) -> web.StreamResponse:
        if self._count(request) <= int(request.match_info["n"]):
            return web.Response(status=429, text="slow down\n", headers={"Retry-After": request.match_info["seconds"]})
        return self._image(request)

    async def _html(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="<!DOCTYPE html><html><body><h1>Image not available</h1></body></html>", content_type="text/html")

    async def _json(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "not found", "status": 404})

    async def _wrong_type(self, request: web.Request) -> web.StreamResponse:
        return self._image(request, content_type="text/plain")

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        data = self.body(request.match_info["name"])
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        await asyncio.sleep(0.05)
        request.transport.close()
        raise asyncio.CancelledError  # stop aiohttp from finishing the response

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        data = self.body(request.match_info["name"])
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        await asyncio.sleep(0.05)
        sock = request.transport.get_extra_info("socket")
        if sock is not None:  # SO_LINGER 0: close() sends an RST instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.transport.abort()
        raise asyncio.CancelledError

    async def _slow_first_byte(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return self._image(request)

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        data = self.body(request.match_info["name"])
        seconds = float(request.match_info["seconds"])
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = len(data)
        await response.prepare(request)
        steps = 20
        step = len(data) // steps + 1
        for i in range(0, len(data), step):
            await response.write(data[i:i + step])
            await asyncio.sleep(seconds / steps)
        await response.write_eof()
        return response

    async def _oversize(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=jpeg_bytes(request.match_info["name"], int(request.match_info["nbytes"])), content_type="image/jpeg")

    async def _oversize_stream(self, request: web.Request) -> web.StreamResponse:
        data = jpeg_bytes(request.match_info["name"], int(request.match_info["nbytes"]))
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(data), 65536):
            await response.write(data[i:i + 65536])
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        n, name = int(request.match_info["n"]), request.match_info["name"]
        target = f"/redirect/{n - 1}/{name}.jpg" if n > 1 else f"/media/{name}.jpg"
        raise web.HTTPMovedPermanently(location=target)

    async def _redirect_to(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(location=request.query["location"])

    async def _generated(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        ext = request.match_info["ext"]
        data = make_image(int(q.get("w", 64)), int(q.get("h", 48)), ext, q.get("mode", "RGB"), int(q.get("orientation", 1)),
                          q.get("gps") == "1")
        if "cut" in q:
            data = data[:int(len(data) * float(q["cut"]))]
        return web.Response(body=data, content_type=MIME_BY_EXT[ext])

    async def _bomb(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb_png(), content_type="image/png")

    async def _photo_version(self, request: web.Request) -> web.StreamResponse:
        version, status = request.match_info["version"], int(request.match_info["status"])
        if version != "original" and status:
            return web.Response(status=status, text=f"no {version} version\n")
        side = PHOTO_VERSION_SIDES[version]
        return web.Response(body=make_image(side, side * 3 // 4), content_type="image/jpeg")

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> MediaServer:
        if self._server is None:
            server = AppThread(self.make_app, self.host, self.port, name="media-server",
                               runner_options={"shutdown_timeout": 0.5}, site_options={"backlog": 2048})
            self.port = server.start()
            self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve test media on 127.0.0.1 until interrupted.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--image_bytes", type=int, default=DEFAULT_IMAGE_BYTES)
    args = parser.parse_args(argv)
    with MediaServer(latency=args.latency, image_size=args.image_bytes, port=args.port) as server:
        print(f"media server on {server.base_url}", flush=True)  # the bound port, also when --port is 0
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
