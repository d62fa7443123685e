"""MediaRecord's deterministic Beam coder, registered for the type when any transform is imported."""

from __future__ import annotations

from apache_beam import coders

from beam_gbif.core.records import MediaRecord, decode_record, encode_record


class MediaRecordCoder(coders.Coder):
    """Deterministic: the fields in declaration order as compact JSON."""

    def encode(self, value: MediaRecord) -> bytes:
        return encode_record(value)

    def decode(self, encoded: bytes) -> MediaRecord:
        return decode_record(encoded)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return MediaRecord


coders.registry.register_coder(MediaRecord, MediaRecordCoder)
