"""Per-stream quotas from per-stream availability: the arithmetic of the README's "Sampling" section.

Pure Python and integer-exact (a float only orders a fast path), so the planner (on API counts)
and the sampler (on what was read, weighted by the same counts) compute the same quotas, and
100k streams take milliseconds.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from beam_gbif.core.errors import OptionError
from beam_gbif.core.hashing import seeded_hash, stream_text

Stream = tuple[str, ...]

# Separates the tie-breaking order of quota arithmetic from every other seeded choice.
_TIE_BREAK_PURPOSE = "quota-tie-break"


def validate_sampling_options(*, nb_samples: int | None, nb_samples_per_stream: int | None, weighted: bool) -> None:
    """Raises OptionError for values no quota rule accepts."""
    if nb_samples is not None and (nb_samples == 0 or nb_samples < -1):
        raise OptionError(f"--nb_samples must be a positive number of records, or -1 for the largest balanced set; got {nb_samples}")
    if nb_samples_per_stream is not None and nb_samples_per_stream < 1:
        raise OptionError(f"--nb_samples_per_stream must be at least 1; got {nb_samples_per_stream}")
    if weighted and nb_samples == -1:
        raise OptionError(
            "--weighted_streams cannot be combined with --nb_samples -1 (which asks for an exactly balanced set); "
            "give a positive --nb_samples, or drop --weighted_streams"
        )


def compute_quotas(
    availability: Mapping[Stream, int],
    *,
    nb_samples: int | None,
    nb_samples_per_stream: int | None,
    weighted: bool,
    seed: int,
    weights: Mapping[Stream, int] | None = None,
) -> dict[Stream, int]:
    """The number of records to select from each stream; never more than it has.

    - no ``nb_samples``: everything, capped by ``nb_samples_per_stream``;
    - ``nb_samples = N`` (balanced): max-min fair water-filling over the capped availability,
      the leftover units going one each to the unfilled streams in a seeded order;
      Σ = min(N, Σ capped availability);
    - ``nb_samples = -1``: the smallest availability (capped) for every stream;
    - ``weighted``: proportional to ``weights`` (default: the availability) by largest
      remainder (ties in a seeded order); a stream whose share exceeds its capped
      availability is held at it and its excess shared proportionally by the others.

    ``weights`` are the stream sizes the shares follow when they are not the availability:
    the GBIF API source reads only part of each stream, so its sampler weighs streams by the
    sizes GBIF counted while the availability (what was read) still bounds each quota. Only
    the weighted rule reads them; they must cover every stream of ``availability``.
    """
    validate_sampling_options(nb_samples=nb_samples, nb_samples_per_stream=nb_samples_per_stream, weighted=weighted)
    _check_counts("availability", availability)
    if weights is not None:
        _check_counts("weight", weights)
        missing = [stream for stream in availability if stream not in weights]
        if missing:
            raise ValueError(f"no weight for stream(s) {missing[:5]!r}{' ...' if len(missing) > 5 else ''}")
    bounds = {stream: _capped(count, nb_samples_per_stream) for stream, count in availability.items()}
    if not bounds or nb_samples is None:
        return bounds
    if nb_samples == -1:
        level = min(bounds.values())
        return {stream: level for stream in bounds}
    if weighted:
        return _weighted(availability if weights is None else weights, bounds, nb_samples, seed)
    return _water_filling(bounds, nb_samples, seed)


def weights_from_sizes(availability: Mapping[Stream, int], sizes: Mapping[Stream, int]) -> dict[Stream, int] | None:
    """Each available stream's size, or None when ``sizes`` do not name every one of them.

    The sizes are keyed by the values a query was counted with and the streams by the values
    the records hold; GBIF matches values regardless of case (``dk`` counts ``DK``), so a
    stream without an exact match takes the size of its case-insensitive match.
    """
    if not sizes:
        return None
    folded = {_folded(stream): size for stream, size in sizes.items()}
    if len(folded) < len(sizes) or len({_folded(stream) for stream in availability}) < len(availability):
        folded = {}  # values that differ only in case: a case-insensitive match would be ambiguous
    weights = {}
    for stream in availability:
        size = sizes.get(stream, folded.get(_folded(stream)))
        if size is None:
            return None
        weights[stream] = size
    return weights


def _folded(stream: Stream) -> Stream:
    return tuple(value.casefold() for value in stream)


def _capped(count: int, cap: int | None) -> int:
    return count if cap is None else min(count, cap)


def _tie_key(stream: Stream, seed: int) -> tuple[int, Stream]:
    return seeded_hash(seed, stream_text(stream), purpose=_TIE_BREAK_PURPOSE), stream


def _water_filling(bounds: dict[Stream, int], total: int, seed: int) -> dict[Stream, int]:
    """quota_i = min(bound_i, t) for the largest level t with Σ quota ≤ total, plus leftovers."""
    level = water_level(bounds.values(), total)
    if level is None:
        return dict(bounds)
    quotas = {stream: min(bound, level) for stream, bound in bounds.items()}
    leftover = total - sum(quotas.values())
    # The leftover units go one each to streams above the level (so never beyond a bound),
    # in a seeded order; fewer of them than there are such streams, by the choice of t.
    rest = [stream for stream, bound in bounds.items() if bound > level]
    extra = set(heapq.nsmallest(leftover, rest, key=lambda stream: _tie_key(stream, seed))) if leftover else set()
    for stream in extra:
        quotas[stream] += 1
    return quotas


def _check_counts(what: str, counts: Mapping[Stream, int]) -> None:
    for stream, count in counts.items():
        if count < 0:
            raise ValueError(f"{what} of stream {stream!r} is negative: {count}")


def _weighted(weights: Mapping[Stream, int], bounds: dict[Stream, int], total: int, seed: int) -> dict[Stream, int]:
    """Largest-remainder apportionment of ``total`` ∝ ``weights``, within ``bounds``."""
    if total >= sum(bounds.values()):
        return dict(bounds)
    quotas = _held_at_bounds(weights, bounds, total)
    remaining = total - sum(quotas.values())
    free = [stream for stream in bounds if stream not in quotas]
    free_weight = sum(weights[stream] for stream in free)
    if not free or free_weight == 0:
        quotas.update({stream: 0 for stream in free})
        return quotas
    remainders: dict[Stream, int] = {}
    for stream in free:
        quotas[stream], remainders[stream] = divmod(remaining * weights[stream], free_weight)
    leftover = remaining - sum(quotas[stream] for stream in free)
    # Leftover < number of non-zero remainders, and a stream with a non-zero remainder has a
    # share strictly below its (integer) bound, so rounding it up stays within the bound.
    if leftover:
        for stream in _largest_remainders(free, remainders, leftover, seed):
            quotas[stream] += 1
    return quotas


def _held_at_bounds(weights: Mapping[Stream, int], bounds: Mapping[Stream, int], total: int) -> dict[Stream, int]:
    """The streams held at their bound: quota_i = min(bound_i, λ·weight_i) for the λ that makes Σ = total.

    A stream is held when bound_i / weight_i < λ, and holding it raises λ for the others
    (λ = remaining / free weight). So in ascending bound/weight the held streams come first
    and one pass stops at the first stream that fits. That order is sorted on floats, which
    could misorder two near-equal ratios; the exact integer check repeats until no free
    stream is over its bound, so the result never depends on rounding.
    """
    held: dict[Stream, int] = {}
    remaining, free_weight = total, sum(weights[stream] for stream in bounds)

    def over(stream: Stream) -> bool:  # share = remaining * weight / free_weight > bound
        return stream not in held and remaining * weights[stream] > bounds[stream] * free_weight

    order = sorted((stream for stream in bounds if weights[stream] > 0), key=lambda stream: bounds[stream] / weights[stream])
    for stream in order:
        if not over(stream):
            break
        held[stream] = bounds[stream]
        remaining, free_weight = remaining - bounds[stream], free_weight - weights[stream]
    while late := [stream for stream in order if over(stream)]:
        for stream in late:
            held[stream] = bounds[stream]
            remaining, free_weight = remaining - bounds[stream], free_weight - weights[stream]
    return held


def _largest_remainders(streams: list[Stream], remainders: dict[Stream, int], count: int, seed: int) -> list[Stream]:
    """The ``count`` streams of largest remainder; ties at the cut-off in the seeded order."""
    by_remainder = sorted(streams, key=lambda stream: remainders[stream], reverse=True)
    cutoff = remainders[by_remainder[count - 1]]
    above = [stream for stream in by_remainder[:count] if remainders[stream] > cutoff]
    # Only streams tied at the cut-off need the (costlier) seeded order.
    tied = [stream for stream in by_remainder if remainders[stream] == cutoff]
    return above + heapq.nsmallest(count - len(above), tied, key=lambda stream: _tie_key(stream, seed))


def water_level(bounds: Iterable[int], total: int) -> int | None:
    """The largest t with Σ min(bound, t) ≤ total, or None when every bound fits (Σ ≤ total)."""
    ascending = sorted(bounds)
    remaining, unfilled = total, len(ascending)
    for bound in ascending:
        if bound * unfilled > remaining:
            return remaining // unfilled
        remaining -= bound
        unfilled -= 1
    return None
