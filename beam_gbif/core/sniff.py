"""What a downloaded body really is, from its magic bytes; the file extension comes from here, never from the server."""

from __future__ import annotations

from beam_gbif.core.records import MOVING_IMAGE as VIDEO
from beam_gbif.core.records import SOUND
from beam_gbif.core.records import STILL_IMAGE as IMAGE

_ISO_BRANDS = {
    b"heic": ("heic", "image/heic", IMAGE), b"heix": ("heic", "image/heic", IMAGE), b"hevc": ("heic", "image/heic", IMAGE),
    b"heim": ("heic", "image/heic", IMAGE), b"heis": ("heic", "image/heic", IMAGE), b"mif1": ("heic", "image/heif", IMAGE),
    b"msf1": ("heic", "image/heif", IMAGE), b"avif": ("avif", "image/avif", IMAGE), b"avis": ("avif", "image/avif", IMAGE),
    b"M4A ": ("m4a", "audio/mp4", SOUND), b"M4B ": ("m4a", "audio/mp4", SOUND),
    b"qt  ": ("mov", "video/quicktime", VIDEO), b"3gp4": ("3gp", "video/3gpp", VIDEO), b"3gp5": ("3gp", "video/3gpp", VIDEO),
}


MIME_BY_EXT = {
    "jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp", "tif": "image/tiff", "bmp": "image/bmp",
    "heic": "image/heic", "avif": "image/avif", "m4a": "audio/mp4", "mov": "video/quicktime", "3gp": "video/3gpp",
    "mp4": "video/mp4", "wav": "audio/wav", "avi": "video/x-msvideo", "flac": "audio/flac", "ogg": "audio/ogg",
    "ogv": "video/ogg", "mp3": "audio/mpeg", "webm": "video/webm", "pdf": "application/pdf", "bin": "application/octet-stream",
}

_SHA1_HEX = frozenset("0123456789abcdef")


def is_media_file_name(name: str) -> bool:
    """True for the names of the files this project downloads: the sha1 of the URL, a sniffed extension."""
    stem, dot, ext = name.partition(".")
    return bool(dot) and len(stem) == 40 and set(stem) <= _SHA1_HEX and ext in MIME_BY_EXT


class NotMedia(Exception):
    """The body is not of the requested media type; the message says what it is instead."""


def sniff(head: bytes) -> tuple[str, str, str] | None:
    """(extension, MIME type, GBIF media type) of a known format, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg", "image/jpeg", IMAGE
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png", "image/png", IMAGE
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif", "image/gif", IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp", "image/webp", IMAGE
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif", "image/tiff", IMAGE
    if head[:2] == b"BM" and len(head) >= 14:
        return "bmp", "image/bmp", IMAGE
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _ISO_BRANDS:
            return _ISO_BRANDS[brand]
        return "mp4", "video/mp4", VIDEO
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav", "audio/wav", SOUND
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi", "video/x-msvideo", VIDEO
    if head.startswith(b"fLaC"):
        return "flac", "audio/flac", SOUND
    if head.startswith(b"OggS"):
        return "ogg", "audio/ogg", SOUND
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3", "audio/mpeg", SOUND
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm", "video/webm", VIDEO
    if head.startswith(b"%PDF"):
        return "pdf", "application/pdf", ""
    return None


def _looks_like_text_page(head: bytes) -> str | None:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<")):
        return "an HTML/XML page"
    if text.startswith((b"{", b"[")):
        return "a JSON document"
    return None


def classify(body: bytes, media_type: str) -> tuple[str, str]:
    """(extension, MIME type) for a body that is of ``media_type``; raises NotMedia otherwise.

    Ogg carries both sound and video, so it is accepted for either.
    """
    if not body:
        raise NotMedia("empty body")
    found = sniff(body[:64])
    if found is None:
        page = _looks_like_text_page(body[:256])
        if page:
            raise NotMedia(f"body is {page}, not {media_type}")
        if media_type in (IMAGE, SOUND, VIDEO):
            raise NotMedia(f"body starts with {body[:8].hex()}, not a known {media_type} format")
        return "bin", "application/octet-stream"
    ext, mime, kind = found
    if media_type in (IMAGE, SOUND, VIDEO) and kind != media_type and not (ext == "ogg" and media_type == VIDEO):
        raise NotMedia(f"body is {mime}, not {media_type}")
    if ext == "ogg" and media_type == VIDEO:
        return "ogv", "video/ogg"
    return ext, mime
