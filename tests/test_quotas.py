"""Property tests of the quota arithmetic (README "Sampling")."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_gbif.core.errors import OptionError
from beam_gbif.core.quotas import compute_quotas, water_level, weights_from_sizes

availabilities = st.dictionaries(
    keys=st.tuples(st.text(alphabet="abcdef", min_size=1, max_size=3), st.sampled_from(["x", "y"])),
    values=st.integers(min_value=0, max_value=400),
    max_size=25,
)
totals = st.integers(min_value=1, max_value=6000)
caps = st.one_of(st.none(), st.integers(min_value=1, max_value=300))
seeds = st.integers(min_value=0, max_value=2**32)


def bounds_of(availability, cap):
    return {s: a if cap is None else min(a, cap) for s, a in availability.items()}


@settings(max_examples=150, deadline=None)
@given(availabilities, totals, caps, seeds)
def test_balanced_quotas_are_max_min_fair_and_sum_to_what_can_be_had(availability, total, cap, seed):
    quotas = compute_quotas(availability, nb_samples=total, nb_samples_per_stream=cap, weighted=False, seed=seed)
    bounds = bounds_of(availability, cap)
    assert quotas.keys() == availability.keys()
    assert sum(quotas.values()) == min(total, sum(bounds.values()))
    for stream, quota in quotas.items():
        assert 0 <= quota <= bounds[stream] <= availability[stream]
    # Max-min fair: a stream below its bound got at least as much as any other, minus the one leftover unit.
    for stream, quota in quotas.items():
        if quota < bounds[stream]:
            assert all(other <= quota + 1 for other in quotas.values())


@settings(max_examples=100, deadline=None)
@given(availabilities, caps, seeds)
def test_minus_one_gives_every_stream_the_smallest_availability(availability, cap, seed):
    quotas = compute_quotas(availability, nb_samples=-1, nb_samples_per_stream=cap, weighted=False, seed=seed)
    level = min(bounds_of(availability, cap).values(), default=0)
    assert quotas == {stream: level for stream in availability}


@settings(max_examples=150, deadline=None)
@given(availabilities, totals, caps, seeds)
def test_weighted_quotas_are_proportional_within_rounding_and_respect_caps(availability, total, cap, seed):
    quotas = compute_quotas(availability, nb_samples=total, nb_samples_per_stream=cap, weighted=True, seed=seed)
    bounds = bounds_of(availability, cap)
    assert sum(quotas.values()) == min(total, sum(bounds.values()))
    for stream, quota in quotas.items():
        assert 0 <= quota <= bounds[stream]
    weight = sum(availability.values())
    if cap is None and total < weight:
        for stream, quota in quotas.items():
            assert abs(quota - total * availability[stream] / weight) < 1
    # With caps: quota_i = min(cap_i, λ·avail_i) within rounding, for one λ. So a stream below
    # its cap has a ratio (q+1)/a above λ, and every stream has (q-1)/a below it.
    for stream, quota in quotas.items():
        if quota < bounds[stream]:
            for other, other_quota in quotas.items():
                if availability[other] and availability[stream]:
                    assert (quota + 1) * availability[other] > (other_quota - 1) * availability[stream]


@settings(max_examples=150, deadline=None)
@given(availabilities, totals, caps, seeds, st.data())
def test_weighted_quotas_follow_the_weights_within_the_bounds_of_the_availability(availability, total, cap, seed, data):
    # Weights as the API source has them: a size counted per stream, unrelated to how much was read.
    weights = {stream: data.draw(st.integers(min_value=1, max_value=10**6)) for stream in availability}
    quotas = compute_quotas(availability, nb_samples=total, nb_samples_per_stream=cap, weighted=True, seed=seed, weights=weights)
    bounds = bounds_of(availability, cap)
    assert sum(quotas.values()) == min(total, sum(bounds.values()))
    assert all(0 <= quotas[stream] <= bounds[stream] for stream in availability)
    # quota_i = min(bound_i, λ·weight_i) within rounding, for one λ (as with availability as the weights).
    for stream, quota in quotas.items():
        if quota < bounds[stream]:
            assert all((quota + 1) * weights[other] > (quotas[other] - 1) * weights[stream] for other in quotas)
    # The availability as the weights is the default.
    assert compute_quotas(availability, nb_samples=total, nb_samples_per_stream=cap, weighted=True, seed=seed, weights=availability) == \
        compute_quotas(availability, nb_samples=total, nb_samples_per_stream=cap, weighted=True, seed=seed)


def test_weights_worked_example_a_stream_short_of_its_share_gives_its_excess_to_the_others_by_weight():
    sizes = {("a",): 100, ("b",): 300, ("c",): 600}
    read = {("a",): 100, ("b",): 50, ("c",): 200}  # each stream read past its share: the shares follow the sizes
    assert compute_quotas(read, nb_samples=100, nb_samples_per_stream=None, weighted=True, seed=0, weights=sizes) == {
        ("a",): 10, ("b",): 30, ("c",): 60,
    }  # fmt: skip
    # (By the records read, a would get 100 × 100 / 350 ≈ 29 instead of 10: the bug of issue 10 §5.)
    read[("b",)] = 12  # short of its share of 30: held at 12, the other 88 split 1:6 between a and c
    assert compute_quotas(read, nb_samples=100, nb_samples_per_stream=None, weighted=True, seed=0, weights=sizes) == {
        ("a",): 13, ("b",): 12, ("c",): 75,
    }  # fmt: skip
    with pytest.raises(ValueError, match="no weight"):
        compute_quotas({("d",): 1}, nb_samples=1, nb_samples_per_stream=None, weighted=True, seed=0, weights=sizes)


def test_sizes_name_streams_exactly_else_regardless_of_case_else_not_at_all():
    assert weights_from_sizes({("DK",): 5, ("FR",): 2}, {("dk",): 50, ("FR",): 20, ("US",): 9}) == {("DK",): 50, ("FR",): 20}
    assert weights_from_sizes({("DK",): 5, ("SE",): 2}, {("dk",): 50}) is None  # SE was read but never counted
    assert weights_from_sizes({("DK",): 5}, {}) is None  # the source could not count its streams
    # Values that differ only in case cannot be matched by case.
    assert weights_from_sizes({("a",): 1, ("A",): 1}, {("a",): 7, ("x",): 3}) is None


@settings(max_examples=100, deadline=None)
@given(availabilities, totals, caps, seeds, st.booleans())
def test_same_seed_same_quotas_and_the_seed_only_moves_leftover_units(availability, total, cap, seed, weighted):
    first = compute_quotas(availability, nb_samples=total, nb_samples_per_stream=cap, weighted=weighted, seed=seed)
    shuffled = dict(reversed(list(availability.items())))
    again = compute_quotas(shuffled, nb_samples=total, nb_samples_per_stream=cap, weighted=weighted, seed=seed)
    other = compute_quotas(availability, nb_samples=total, nb_samples_per_stream=cap, weighted=weighted, seed=seed + 1)
    assert first == again
    assert sum(first.values()) == sum(other.values())
    assert all(abs(first[s] - other[s]) <= 1 for s in first)


@settings(max_examples=100, deadline=None)
@given(availabilities, caps)
def test_no_nb_samples_takes_everything_up_to_the_cap(availability, cap):
    quotas = compute_quotas(availability, nb_samples=None, nb_samples_per_stream=cap, weighted=False, seed=0)
    assert quotas == bounds_of(availability, cap)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=500), max_size=30), totals)
def test_water_level_is_the_largest_level_that_fits(bounds, total):
    level = water_level(bounds, total)
    if level is None:
        assert sum(bounds) <= total
    else:
        assert sum(min(b, level) for b in bounds) <= total < sum(min(b, level + 1) for b in bounds)


def test_leftover_units_go_to_streams_in_a_seeded_order():
    availability = {(str(i),): 100 for i in range(10)}
    winners = set()
    for seed in range(20):
        quotas = compute_quotas(availability, nb_samples=15, nb_samples_per_stream=None, weighted=False, seed=seed)
        assert sorted(quotas.values()) == [1] * 5 + [2] * 5
        winners.add(frozenset(s for s, q in quotas.items() if q == 2))
    assert len(winners) > 10  # different seeds favour different streams


def test_worked_examples():
    availability = {("a",): 1, ("b",): 5, ("c",): 10, ("d",): 10}
    balanced = compute_quotas(availability, nb_samples=15, nb_samples_per_stream=None, weighted=False, seed=0)
    assert balanced[("a",)] == 1 and sorted(balanced.values()) == [1, 4, 5, 5]
    assert compute_quotas(availability, nb_samples=-1, nb_samples_per_stream=None, weighted=False, seed=0) == dict.fromkeys(availability, 1)
    capped = compute_quotas(availability, nb_samples=None, nb_samples_per_stream=4, weighted=False, seed=0)
    assert capped == {("a",): 1, ("b",): 4, ("c",): 4, ("d",): 4}
    weighted = compute_quotas(availability, nb_samples=13, nb_samples_per_stream=None, weighted=True, seed=0)
    assert weighted[("c",)] == weighted[("d",)] == 5 and weighted[("a",)] + weighted[("b",)] == 3
    # c and d are held at 4; their excess goes to a and b in proportion 1:5.
    assert compute_quotas(availability, nb_samples=12, nb_samples_per_stream=4, weighted=True, seed=0) == {
        ("a",): 1, ("b",): 3, ("c",): 4, ("d",): 4,
    }  # fmt: skip
    assert compute_quotas({}, nb_samples=10, nb_samples_per_stream=None, weighted=False, seed=0) == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nb_samples": 0}, "--nb_samples must be a positive number"),
        ({"nb_samples": -2}, "--nb_samples must be a positive number"),
        ({"nb_samples_per_stream": 0}, "--nb_samples_per_stream must be at least 1"),
        ({"nb_samples": -1, "weighted": True}, "--weighted_streams cannot be combined with --nb_samples -1"),
    ],
)
def test_invalid_values_are_option_errors_naming_the_option(kwargs, message):
    arguments = {"nb_samples": None, "nb_samples_per_stream": None, "weighted": False, "seed": 0, **kwargs}
    with pytest.raises(OptionError, match=message):
        compute_quotas({("a",): 3}, **arguments)


def test_a_hundred_thousand_streams_take_about_a_second_of_cpu():
    availability = {(str(i),): (i * 7919) % 5000 for i in range(100_000)}
    for weighted in (False, True):
        started = time.process_time()  # CPU time: the machine is shared, wall time is not ours
        quotas = compute_quotas(availability, nb_samples=1_000_000, nb_samples_per_stream=40, weighted=weighted, seed=3)
        assert sum(quotas.values()) == 1_000_000
        assert time.process_time() - started < 3.0
