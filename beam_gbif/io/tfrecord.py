"""TFRecord files without TensorFlow: the record framing (with its masked CRC32C) and a hand-encoded
``tf.train.Example`` (the protobuf wire format of Example → Features → map<string, Feature>).

Frame of one record: uint64 length (little-endian), uint32 masked CRC32C of those 8 bytes, the
data, uint32 masked CRC32C of the data. Features are written in sorted key order, so the same
values always give the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import google_crc32c  # already installed with google-cloud-storage (a Beam [gcp] dependency); C speed

_MASK_DELTA = 0xA282EAD8
# Wire types and field numbers of tensorflow/core/example/{example,feature}.proto.
_LEN = 2
_BYTES_LIST, _INT64_LIST = 1, 3

FeatureValue = Sequence[bytes] | Sequence[int]


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 is its 64-bit two's complement (ten bytes)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _feature(values: FeatureValue) -> bytes:
    if all(isinstance(value, bytes) for value in values):
        return _field(_BYTES_LIST, b"".join(_field(1, value) for value in values))  # type: ignore[arg-type]
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        packed = b"".join(_varint(value) for value in values)  # type: ignore[arg-type]
        return _field(_INT64_LIST, _field(1, packed))
    raise TypeError("a feature holds only bytes or only ints")


def example(features: Mapping[str, FeatureValue]) -> bytes:
    """A serialized ``tf.train.Example`` with one BytesList or Int64List per key."""
    entries = b"".join(
        _field(1, _field(1, key.encode("utf-8")) + _field(2, _feature(values))) for key, values in sorted(features.items())
    )
    return _field(1, entries)
