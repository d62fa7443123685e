"""Smaller published versions of the same photo: which URL to fetch for ``--source_size``.

Some hosts publish every photo in several sizes at predictable URLs. Fetching a version just
large enough for ``--image_size`` instead of a 12-megapixel original saves most of the bytes
and the decode time. One rule per host family in ``RULES``; add a host by adding a rule (and
a unit test on real URLs). The published URL is always the last candidate: a version that is
missing there (404, 410, or 403 as S3 answers for a missing key) falls back to it.
"""

from __future__ import annotations

import dataclasses
import re

from beam_gbif.core.errors import OptionError

SOURCE_SIZES = ("auto", "original", "large", "medium", "small")
# Answers that mean "this version is not there" (S3 answers 403 for a missing key without list rights).
MISSING_VERSION_STATUSES = frozenset({403, 404, 410})


@dataclasses.dataclass(frozen=True)
class SizeRule:
    """``pattern`` matches a published original URL with groups ``head`` and ``tail``; a version's URL is
    ``head + token + tail``. ``versions``: (size name, URL token, longer side in pixels), largest first."""

    name: str
    pattern: re.Pattern[str]
    versions: tuple[tuple[str, str, int], ...]

    def url_for(self, match: re.Match[str], token: str) -> str:
        return f"{match['head']}{token}{match['tail']}"


RULES: tuple[SizeRule, ...] = (
    # iNaturalist (open-data bucket and static host): photos/<id>/original.<ext>; large/medium/small
    # are the longer side's pixels as iNaturalist documents them.
    SizeRule("iNaturalist", re.compile(
        r"(?P<head>https?://(?:inaturalist-open-data\.s3\.amazonaws\.com|static\.inaturalist\.org)/photos/\d+/)"
        r"original(?P<tail>\.(?:jpe?g|png|gif|JPE?G|PNG)(?:\?\d*)?)"),
        (("large", "large", 1024), ("medium", "medium", 500), ("small", "small", 240))),
    # Pl@ntNet: image/o/<id> is the original, /m/ and /s/ the medium and small versions.
    SizeRule("Pl@ntNet", re.compile(r"(?P<head>https?://bs\.plantnet\.org/image/)o(?P<tail>/[0-9A-Za-z]+)"),
             (("medium", "m", 800), ("small", "s", 300))),
)

# keep_ratio and center_crop need the SMALLER side at --image_size, a version's size is its longer
# side: assume a 4:3 photo, the usual camera shape, so the version chosen is large enough for it.
_SMALLER_SIDE_MODES = frozenset({"keep_ratio", "center_crop"})
_PHOTO_ASPECT = 4 / 3


def check_source_size(source_size: str) -> None:
    if source_size not in SOURCE_SIZES:
        raise OptionError(f"--source_size must be one of {', '.join(SOURCE_SIZES)}, got {source_size!r}")


def _auto_choice(versions: tuple[tuple[str, str, int], ...], image_size: int | None, resize_mode: str) -> str | None:
    """The token of the smallest version at least as large as the target; None: the original."""
    if not image_size or resize_mode == "no":
        return None
    needed = image_size * _PHOTO_ASPECT if resize_mode in _SMALLER_SIDE_MODES else image_size
    fitting = [(pixels, token) for _name, token, pixels in versions if pixels >= needed]
    return min(fitting)[1] if fitting else None


def source_candidates(url: str, source_size: str = "auto", image_size: int | None = None,
                      resize_mode: str = "keep_ratio_largest") -> list[str]:
    """URLs to fetch in order, the published ``url`` last (alone when no rule or no version applies)."""
    if source_size == "original":
        return [url]
    for rule in RULES:
        match = rule.pattern.fullmatch(url)
        if match is None:
            continue
        if source_size == "auto":
            token = _auto_choice(rule.versions, image_size, resize_mode)
        else:
            token = next((token for name, token, _ in rule.versions if name == source_size), None)
        return [rule.url_for(match, token), url] if token else [url]
    return [url]
