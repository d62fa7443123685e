"""Seeded, process-independent hashes: the only source of randomness in sampling and splits.

Python's ``hash()`` is salted per process, so two workers (or two runs) would disagree; a
blake2b of (purpose, seed, identifier) gives every worker, runner and rerun the same value.
"""

from __future__ import annotations

import hashlib


def seeded_hash(seed: int, text: str, *, purpose: str = "") -> int:
    """A 64-bit integer, uniform over [0, 2**64), fixed by (purpose, seed, text).

    ``purpose`` separates independent choices made from the same identifiers (which record
    a stream keeps and which split an occurrence goes to must not be correlated).
    """
    # The seed is decimal digits and the separator cannot occur in it, so distinct
    # (purpose, seed, text) triples never produce the same message.
    message = f"{purpose}\x1f{int(seed)}\x1f{text}".encode()
    return int.from_bytes(hashlib.blake2b(message, digest_size=8).digest(), "big")


def seeded_unit(seed: int, text: str, *, purpose: str = "") -> float:
    """``seeded_hash`` mapped to [0, 1)."""
    return seeded_hash(seed, text, purpose=purpose) / 2.0**64


def stream_text(stream: tuple[str, ...]) -> str:
    """An unambiguous text form of a stream tuple (its values may contain any character)."""
    # Length-prefixed values: ("a,b",) and ("a", "b") can never give the same text.
    return "".join(f"{len(value)}:{value};" for value in stream)
