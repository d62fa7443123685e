"""Real images for tests and benchmarks, made with Pillow: sizes, EXIF orientation, GPS tags, modes, cut bodies, bombs.

Every image is the same picture of an upright scene: a red block in its top-left corner on a
blue ground (``marker_corner`` finds the block again), so a test can tell by its pixels whether
a stored image is upright. An image with orientation N is stored sideways or flipped so that a
viewer applying the tag shows that upright scene.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

from PIL import Image

# Orientation N → the transform that turns the upright scene into the stored pixels (the inverse of what a viewer applies).
_STORED_AS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_270}
_PILLOW_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
RED, BLUE = (220, 20, 20), (20, 20, 220)
GPS_IFD = 0x8825


def scene(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """The upright scene: blue, with a red block over the top-left quarter's corner (a third of each side)."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, max(1, width // 3), max(1, height // 3)))
    if mode == "RGBA" or mode == "PA":
        alpha = Image.new("L", (width, height), 255)
        alpha.paste(0, (width // 2, height // 2, width, height))  # the bottom-right quarter is transparent
        image.putalpha(alpha)
    if mode == "P" or mode == "PA":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4) if mode == "P" else _palette_with_alpha(image)
    return image.convert(mode) if mode != image.mode else image


def _palette_with_alpha(rgba: Image.Image) -> Image.Image:
    """The scene as palette indices 0 (blue) and 1 (red), index 2 transparent over the bottom-right quarter."""
    w, h = rgba.size
    paletted = Image.new("P", (w, h), 0)
    paletted.putpalette([*BLUE, *RED, 0, 0, 0])
    paletted.paste(1, (0, 0, max(1, w // 3), max(1, h // 3)))
    paletted.paste(2, (w // 2, h // 2, w, h))
    paletted.info["transparency"] = 2
    return paletted


def exif_block(orientation: int = 1, gps: bool = False) -> Image.Exif:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    if gps:
        exif[0x010F] = "beam-gbif test camera"  # Make
        place = exif.get_ifd(GPS_IFD)
        place.update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)})
    return exif


@functools.lru_cache(maxsize=256)
def make_image(width: int, height: int, ext: str = "jpg", mode: str = "RGB", orientation: int = 1, gps: bool = False,
               quality: int = 90) -> bytes:
    """The scene at ``width`` × ``height`` (as displayed), encoded as ``ext``, stored for ``orientation``."""
    image = scene(width, height, mode)
    if orientation in _STORED_AS:
        image = image.transpose(_STORED_AS[orientation])
    out = io.BytesIO()
    params: dict = {"exif": exif_block(orientation, gps).tobytes()} if (orientation != 1 or gps) else {}
    if ext in ("jpg", "webp"):
        params["quality"] = quality
    image.save(out, _PILLOW_FORMATS[ext], **params)
    return out.getvalue()


def marker_corner(image: Image.Image) -> str:
    """Which corner of ``image`` holds the red block: "top-left" for an upright scene."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    corners = {"top-left": (w // 10, h // 10), "top-right": (w - 1 - w // 10, h // 10),
               "bottom-left": (w // 10, h - 1 - h // 10), "bottom-right": (w - 1 - w // 10, h - 1 - h // 10)}
    reds = [name for name, xy in corners.items() if rgb.getpixel(xy)[0] > 150 and rgb.getpixel(xy)[2] < 100]
    return reds[0] if len(reds) == 1 else f"unclear ({reds})"


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A small PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + chunk(b"IEND", b"")


def photo_like(width: int, height: int, seed: int, orientation: int = 1, gps: bool = False, quality: int = 90) -> bytes:
    """A camera-like JPEG (smooth colour fields plus grain) for benchmarks: 0.5–3 MB at 2–12 megapixels."""
    rng = random.Random(seed)
    small = Image.new("RGB", (16, 12))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(16 * 12)])
    image = small.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 18 + rng.random() * 10).convert("RGB")
    image = Image.blend(image, grain, 0.18)
    if orientation in _STORED_AS:
        image = image.transpose(_STORED_AS[orientation])
    out = io.BytesIO()
    params = {"exif": exif_block(orientation, gps).tobytes()} if (orientation != 1 or gps) else {}
    image.save(out, "JPEG", quality=quality, **params)
    return out.getvalue()
