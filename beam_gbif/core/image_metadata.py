"""Lossless metadata removal from stored originals (``--strip_metadata``): EXIF, XMP, GPS, IPTC, comments.

The pixels are never touched: JPEG segments, PNG chunks and WebP chunks that carry metadata are
dropped and every other byte is kept. Only the orientation survives (as a one-tag EXIF block) so
the image still displays upright. Colour profiles stay: they are how the pixels look, not who
took them or where.
"""

from __future__ import annotations

import struct
import zlib

# APP1 (EXIF, XMP), APP13 (IPTC / Photoshop), COM. APP0 (JFIF), APP2 (ICC) and APP14 (Adobe: CMYK
# decoding needs it) stay.
_JPEG_DROPPED = frozenset({0xE1, 0xED, 0xFE})
_PNG_DROPPED = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"})
_WEBP_DROPPED = frozenset({b"EXIF", b"XMP "})


class NotStrippable(ValueError):
    """The body's structure is not what its format promises; the caller keeps it as it is."""


def orientation_exif(orientation: int) -> bytes:
    """A TIFF-structured EXIF block (no "Exif" header) holding only the orientation tag."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)


def strip_jpeg(body: bytes, orientation: int) -> bytes:
    if body[:2] != b"\xff\xd8":
        raise NotStrippable("no JPEG start marker")
    kept = [b"\xff\xd8"]
    if orientation > 1:
        exif = b"Exif\x00\x00" + orientation_exif(orientation)
        kept.append(b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif)
    pos = 2
    while pos + 4 <= len(body):
        if body[pos] != 0xFF:
            raise NotStrippable(f"no JPEG marker at byte {pos}")
        marker = body[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data and the rest are kept whole
            kept.append(body[pos:])
            return b"".join(kept)
        length = struct.unpack(">H", body[pos + 2:pos + 4])[0]
        if marker not in _JPEG_DROPPED:
            kept.append(body[pos:pos + 2 + length])
        pos += 2 + length
    raise NotStrippable("no JPEG scan found")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def strip_png(body: bytes, orientation: int) -> bytes:
    signature = b"\x89PNG\r\n\x1a\n"
    if not body.startswith(signature):
        raise NotStrippable("no PNG signature")
    kept, pos = [signature], len(signature)
    while pos + 8 <= len(body):
        length, kind = struct.unpack(">I4s", body[pos:pos + 8])
        end = pos + 12 + length
        if kind not in _PNG_DROPPED:
            kept.append(body[pos:end])
        if kind == b"IHDR" and orientation > 1:
            kept.append(_png_chunk(b"eXIf", orientation_exif(orientation)))
        pos = end
        if kind == b"IEND":
            return b"".join(kept)
    raise NotStrippable("no PNG end chunk")


def strip_webp(body: bytes) -> bytes:
    """WebP without its EXIF and XMP chunks (and their VP8X flags); orientation is not a WebP notion."""
    if body[:4] != b"RIFF" or body[8:12] != b"WEBP":
        raise NotStrippable("no WebP header")
    kept, pos = [], 12
    while pos + 8 <= len(body):
        kind, length = struct.unpack("<4sI", body[pos:pos + 8])
        end = pos + 8 + length + (length & 1)
        chunk = body[pos:end]
        if kind == b"VP8X":
            chunk = chunk[:8] + bytes([chunk[8] & ~0x0C]) + chunk[9:]  # clear the EXIF (0x08) and XMP (0x04) flags
        if kind not in _WEBP_DROPPED:
            kept.append(chunk)
        pos = end
    payload = b"WEBP" + b"".join(kept)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def strip_metadata(body: bytes, ext: str, orientation: int) -> bytes | None:
    """``body`` without its metadata (orientation kept), or None for a format without a lossless way here."""
    if ext == "jpg":
        return strip_jpeg(body, orientation)
    if ext == "png":
        return strip_png(body, orientation)
    if ext == "webp":
        return strip_webp(body)
    return None
