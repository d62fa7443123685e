"""The one record that flows from the sources to the manifest (its Beam coder: transforms/coders.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

# GBIF's media types (the ``type`` of a media item); a run keeps one of them.
STILL_IMAGE, MOVING_IMAGE, SOUND, INTERACTIVE_RESOURCE = "StillImage", "MovingImage", "Sound", "InteractiveResource"
MEDIA_TYPES = (STILL_IMAGE, MOVING_IMAGE, SOUND, INTERACTIVE_RESOURCE)
DEFAULT_MEDIA_TYPE = STILL_IMAGE
# The occurrence field that labels an image by default (gbif-dl's default too).
DEFAULT_LABEL_FIELD = "speciesKey"


class Status:
    """Download outcome of a record. Every FAILED_* value starts with ``FAILED``."""

    DOWNLOADED = "DOWNLOADED"
    SKIPPED_EXISTING = "SKIPPED_EXISTING"
    # Not selected by this run, but its file from an earlier run is still in the output (see --prune).
    KEPT_FROM_EARLIER_RUN = "KEPT_FROM_EARLIER_RUN"
    FAILED_HTTP = "FAILED_HTTP"  # a final non-2xx answer (404, 403, 5xx after retries, ...)
    FAILED_TIMEOUT = "FAILED_TIMEOUT"
    FAILED_CONNECTION = "FAILED_CONNECTION"  # refused, reset, DNS failure
    FAILED_TRUNCATED = "FAILED_TRUNCATED"  # body shorter than Content-Length
    FAILED_TOO_LARGE = "FAILED_TOO_LARGE"
    FAILED_NOT_MEDIA = "FAILED_NOT_MEDIA"  # body does not sniff as the requested media type
    FAILED_REFUSED = "FAILED_REFUSED"  # scheme or address not allowed
    FAILED_INVALID_URL = "FAILED_INVALID_URL"
    FAILED_WRITE = "FAILED_WRITE"
    # Sniffs as an image but does not decode (cut or corrupt data), or its header claims more than --max_image_pixels.
    FAILED_DECODE = "FAILED_DECODE"
    # Refused by a size filter (--min_image_size, --max_aspect_ratio): no file, and not a failure to retry.
    FILTERED_TOO_SMALL = "FILTERED_TOO_SMALL"
    FILTERED_ASPECT_RATIO = "FILTERED_ASPECT_RATIO"

    @staticmethod
    def is_failure(status: str) -> bool:
        return status.startswith("FAILED")


# Statuses of a record whose file is in the dataset (so it counts as a file and needs attribution).
IN_DATASET = frozenset({Status.DOWNLOADED, Status.SKIPPED_EXISTING, Status.KEPT_FROM_EARLIER_RUN})


def url_basename(url: str) -> str:
    """sha1 hex of the URL string: gbif-dl's file name, so existing datasets stay compatible."""
    return hashlib.sha1(url.encode("utf-8")).hexdigest()


# Matched with fullmatch: ``$`` would also match before a trailing newline ("abc\n" kept as is).
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
# Windows opens a device, not a file, for these names, with any extension ("nul.txt") and in any
# case; the superscript digits are reserved too.
_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"]
)


def is_reserved_name(name: str) -> bool:
    """True for a Windows device name: the part before the first dot, trailing spaces removed, is CON, NUL, COM1, ..."""
    return name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED_NAMES


def has_control_character(text: str) -> bool:
    """True if ``text`` holds a C0 or C1 control character (a newline, a tab, DEL, ...)."""
    return any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in text)


def safe_label_dir(label: str) -> str:
    """A path segment for ``label`` that can never leave its parent folder.

    A label that already is a safe segment (a speciesKey, ``Amanita_muscaria``) is kept as it
    is. Anything else (control characters, a Windows device name such as ``CON`` or ``nul.txt``,
    ...) is slugged and suffixed with a short hash of the raw label, so distinct labels never
    share a folder (``a/b`` and ``a_b`` stay apart). A result is itself safe, so applying this
    twice changes nothing (the fetch engine re-applies it to records built by hand).
    """
    if _SAFE_SEGMENT.fullmatch(label) and not label.endswith(".") and not is_reserved_name(label):
        return label
    slug = _UNSAFE_RUN.sub("_", label).strip("._-")[:80] or "label"
    if is_reserved_name(slug):  # "nul.txt" → "nul_txt": the slug's own stem must not be a device name
        slug = slug.replace(".", "_")
    digest = hashlib.sha1(label.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


@dataclasses.dataclass(frozen=True)
class MediaRecord:
    """One media item of one occurrence, from selection to its download result.

    Missing text values are ``""`` (never ``None``), so the manifest schema stays flat.
    """

    url: str
    label: str
    occurrence_key: int
    label_dir: str = ""
    basename: str = ""
    stream: tuple[str, ...] = ()
    dataset_key: str = ""
    media_type: str = DEFAULT_MEDIA_TYPE
    media_format: str = ""
    license: str = ""
    license_code: str = "UNKNOWN"
    rights_holder: str = ""
    creator: str = ""
    publisher: str = ""
    references: str = ""
    source: str = ""  # "api", "dwca:<doi or key>", "urls:<file>"
    split: str = ""
    status: str = ""
    path: str = ""
    bytes: int = 0
    sha256: str = ""
    content_type: str = ""
    error: str = ""
    # Of the stored file (as displayed: upright); 0 when unknown (not an image Pillow reads).
    width: int = 0
    height: int = 0
    # Of the fetched image, upright, and the bytes fetched; fetched_url: the last URL requested
    # (a smaller published version, see core/source_sizes.py); ``url`` stays the published one.
    original_width: int = 0
    original_height: int = 0
    original_bytes: int = 0
    fetched_url: str = ""
    # Dataset formats (transforms/dataset.py): the record's id in every format (sha1 of its URL), the shard
    # holding it (relative to the root; "" for imagefolder), its class index (-1 until known) and the
    # --extra_fields values as (field, value) pairs in option order.
    key: str = ""
    shard: str = ""
    class_index: int = -1
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.basename:
            object.__setattr__(self, "basename", url_basename(self.url))
        if not self.key:
            object.__setattr__(self, "key", url_basename(self.url))
        if not (isinstance(self.extra, tuple) and all(isinstance(pair, tuple) for pair in self.extra)):
            # JSON and Avro give lists or a dict back; the record stays hashable with tuples.
            pairs = self.extra.items() if isinstance(self.extra, dict) else self.extra
            object.__setattr__(self, "extra", tuple((str(name), str(value)) for name, value in pairs))
        if not self.label_dir:
            object.__setattr__(self, "label_dir", safe_label_dir(self.label))
        if not isinstance(self.stream, tuple):
            object.__setattr__(self, "stream", tuple(self.stream))

    def replace(self, **changes: Any) -> MediaRecord:
        """A copy with ``changes``; a download's result fields are copied without re-running ``__post_init__``."""
        if _NORMALISED.isdisjoint(changes) and _FIELD_SET.issuperset(changes):
            copy = object.__new__(type(self))
            copy.__dict__.update(self.__dict__, **changes)
            return copy
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["stream"] = list(self.stream)
        row["extra"] = dict(self.extra)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> MediaRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["stream"] = tuple(values.get("stream") or ())
        return cls(**values)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MediaRecord))
_FIELD_SET = frozenset(FIELD_NAMES)
_NORMALISED = frozenset({"url", "label", "label_dir", "basename", "stream"})  # what __post_init__ fills in or converts
# What a download sets (a record before its download has their defaults).
RESULT_FIELDS: tuple[str, ...] = ("status", "path", "bytes", "sha256", "content_type", "error", "width", "height",
                                  "original_width", "original_height", "original_bytes", "fetched_url", "shard", "class_index")


def encode_record(record: MediaRecord) -> bytes:
    """Deterministic bytes of a record: its fields in declaration order as compact JSON."""
    row = [getattr(record, name) for name in FIELD_NAMES]
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_record(encoded: bytes) -> MediaRecord:
    row = json.loads(encoded.decode("utf-8"))
    return MediaRecord(**dict(zip(FIELD_NAMES, row, strict=True)))
