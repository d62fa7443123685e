"""Licence normalisation (placeholder until the licence work lands)."""

KNOWN_LICENSE_CODES = frozenset({"CC0_1_0", "CC_BY_4_0", "CC_BY_NC_4_0", "UNKNOWN"})


def normalize_license(raw: str) -> str:
    return "UNKNOWN"
