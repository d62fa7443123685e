"""Licence normalisation: GBIF media licences are free text set by each publisher → one code.

Codes: ``CC0_1_0``; ``CC_<elements>_<version>`` for the Creative Commons licences
(``CC_BY_4_0``, ``CC_BY_NC_SA_3_0``, ``CC_BY_2_5`` ...; elements always in the order
BY, NC, SA|ND); the same without a version (``CC_BY``) when the text names the licence but
no version (``"CC-BY"``); ``PUBLIC_DOMAIN`` (Public Domain Mark and public-domain
statements); ``ALL_RIGHTS_RESERVED`` (an explicit reservation or a bare copyright notice);
``UNKNOWN`` for empty text and for anything that is not recognisably one of these — a
filter on ``--licenses`` then excludes it, which is the safe side for the user.

Ported CC licences (``/licenses/by/3.0/nz/``) map to their generic version: they grant the
same permissions under a local jurisdiction's law.
"""

from __future__ import annotations

import functools
import re

UNKNOWN = "UNKNOWN"
CC0 = "CC0_1_0"
PUBLIC_DOMAIN = "PUBLIC_DOMAIN"
ALL_RIGHTS_RESERVED = "ALL_RIGHTS_RESERVED"

# Every (elements, version) pair Creative Commons published for the six current families.
_CC_FAMILIES = ("BY", "BY_SA", "BY_ND", "BY_NC", "BY_NC_SA", "BY_NC_ND")
_CC_VERSIONS = ("1_0", "2_0", "2_1", "2_5", "3_0", "4_0")

KNOWN_LICENSE_CODES: frozenset[str] = frozenset(
    {CC0, PUBLIC_DOMAIN, ALL_RIGHTS_RESERVED, UNKNOWN}
    | {f"CC_{family}" for family in _CC_FAMILIES}
    | {f"CC_{family}_{version}" for family in _CC_FAMILIES for version in _CC_VERSIONS}
)

# creativecommons.org/licenses/by-nc/4.0/legalcode, /publicdomain/zero/1.0/, /licenses/by/3.0/nz/ ...
_CC_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z+-]+)(?:/(\d(?:\.\d)?))?", re.IGNORECASE)
# rightsstatements.org/vocab/InC/1.0/ = "In Copyright".
_RIGHTS_STATEMENT_IN_COPYRIGHT = re.compile(r"rightsstatements\.org/(?:vocab|page)/InC(?:-[A-Z]+)?/", re.IGNORECASE)

# Institutional statements that occur in GBIF data and whose meaning is documented.
# huh.harvard.edu/access-digital-reproductions-works-public-domain: Harvard's policy that it asserts
# no copyright over (and relinquishes any right in) reproductions of public-domain works.
_KNOWN_STATEMENTS = {
    "huh.harvard.edu/access-digital-reproductions-works-public-domain": PUBLIC_DOMAIN,
}

_ELEMENT_WORDS = {
    "by": "BY",
    "attribution": "BY",
    "nc": "NC",
    "noncommercial": "NC",
    "sa": "SA",
    "sharealike": "SA",
    "nd": "ND",
    "noderivs": "ND",
    "noderivatives": "ND",
    "noderivativeworks": "ND",
}
# Multi-word spellings joined before tokenising ("Non Commercial" → noncommercial).
_JOINED_PHRASES = (
    (re.compile(r"\bnon[\s_-]+commercial\b"), "noncommercial"),
    (re.compile(r"\bshare[\s_-]+alike\b"), "sharealike"),
    (re.compile(r"\bno[\s_-]+deriv(?:ative)?s?(?:[\s_-]+works?)?\b"), "noderivatives"),
    (re.compile(r"\bcreative[\s_-]+commons\b"), "cc"),
    (re.compile(r"\bpublic[\s_-]+domain\b"), "publicdomain"),
    (re.compile(r"\ball[\s_-]+rights[\s_-]+reserved\b"), "allrightsreserved"),
)
# "4.0", "2.5"; or a bare "4" / "v4" when the text gives only the major version.
_DOTTED_VERSION = re.compile(r"(?<![\d.])(\d{1,2})[._](\d{1,2})(?![\d])")
_MAJOR_VERSION = re.compile(r"(?<![\d.])v?([1-4])(?![\d.])")
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


# GBIF data repeats a few thousand distinct licence texts across millions of media items.
@functools.lru_cache(maxsize=8192)
def normalize_license(raw: str) -> str:
    """The licence code of a raw licence text (URL, code or free text); ``UNKNOWN`` if not recognised."""
    text = (raw or "").strip()
    if not text:
        return UNKNOWN
    as_code = re.sub(r"[\s-]+", "_", text).upper()
    if as_code in KNOWN_LICENSE_CODES:
        return as_code
    url_code = _from_url(text)
    if url_code:
        return url_code
    return _from_free_text(text)


def _from_url(text: str) -> str:
    match = _CC_URL.search(text)
    if match:
        kind, path, version = match.group(1).lower(), match.group(2).lower(), match.group(3)
        if kind == "publicdomain":
            if path == "zero":
                return CC0
            if path == "mark":
                return PUBLIC_DOMAIN
            return UNKNOWN
        return _cc_code(path.replace("+", "-").split("-"), version)
    if _RIGHTS_STATEMENT_IN_COPYRIGHT.search(text):
        return ALL_RIGHTS_RESERVED
    lowered = text.lower()
    for needle, code in _KNOWN_STATEMENTS.items():
        if needle in lowered:
            return code
    return ""


def _cc_code(words: list[str], version: str | None) -> str:
    """``["by", "nc"]`` + ``"4.0"`` → ``CC_BY_NC_4_0``; ``UNKNOWN`` for impossible combinations."""
    elements = {_ELEMENT_WORDS[word] for word in words if word in _ELEMENT_WORDS}
    if "BY" not in elements or {"SA", "ND"} <= elements:
        return UNKNOWN
    family = "_".join(e for e in ("BY", "NC", "SA", "ND") if e in elements)
    if version is None:
        return f"CC_{family}"
    major, _, minor = version.partition(".")
    code = f"CC_{family}_{major}_{minor or '0'}"
    return code if code in KNOWN_LICENSE_CODES else UNKNOWN


def _version_in(text: str) -> str | None:
    dotted = _DOTTED_VERSION.search(text)
    if dotted:
        return f"{dotted.group(1)}.{dotted.group(2)}"
    major = _MAJOR_VERSION.search(text)
    return f"{major.group(1)}.0" if major else None


def _from_free_text(text: str) -> str:
    lowered = text.lower()
    for pattern, joined in _JOINED_PHRASES:
        lowered = pattern.sub(joined, lowered)
    tokens = _TOKEN.findall(lowered)
    words = set(tokens)
    if words & {"cc0", "cczero"} or ("cc" in words and "zero" in words):
        return CC0
    if "pdm" in words or "publicdomain" in words:
        return PUBLIC_DOMAIN
    if "allrightsreserved" in words:
        return ALL_RIGHTS_RESERVED
    # "CC BY-NC 4.0", "CC-BY 4.0 (Int)", "Creative Commons Attribution Non Commercial (CC-BY-NC) 4.0 License."
    # Also the deed titles "Attribution-NonCommercial 4.0 International" that omit "Creative Commons".
    is_cc = "cc" in words or ("attribution" in words and ("international" in words or "license" in words or "licence" in words))
    if is_cc and words & {"by", "attribution"}:
        return _cc_code(tokens, _version_in(lowered))
    # A copyright notice with no licence grant reserves all rights by default.
    if "©" in text or re.search(r"\(c\)|\bcopyright\b", lowered):
        return ALL_RIGHTS_RESERVED
    return UNKNOWN
