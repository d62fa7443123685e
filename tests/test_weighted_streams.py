"""Weighted quotas from the GBIF API follow the streams' sizes, not how much of each stream the planner read."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from beam_gbif.core.quotas import compute_quotas
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.transforms.manifest import read_manifest
from pipelines.gbif_media import run

# 17 streams over four orders of magnitude, as in the measurement that found the bug (issue 10 §5):
# the largest is over the offset cap and its proportional share over the cap of 120.
SIZES = [3, 5, 8, 14, 22, 37, 60, 95, 150, 223, 340, 520, 780, 1148, 1700, 2600, 112_182]
SPECIES = list(range(201, 201 + len(SIZES)))
NB_SAMPLES, CAP = 300, 120


@pytest.fixture(scope="module")
def api(media):
    # One image with a URL per occurrence and no shared URLs: a stream's size is its count of
    # usable records too, so the expected quotas do not depend on which size the rule reads.
    occurrences = SyntheticOccurrences(SPECIES, ["d"], stream_sizes={(s, "d"): n for s, n in zip(SPECIES, SIZES, strict=True)},
                                       media_base_url=media.base_url, media_count_weights=(0, 1, 0, 0, 0), sound_fraction=0,
                                       missing_identifier_fraction=0, duplicate_url_fraction=0, seed=11)
    with FakeGbifApi(occurrences) as server:
        yield server


# About 8 s a run: one seed in the fast suite, all three in the slow one.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_weighted_api_streams_get_exactly_their_share_of_the_stream_sizes(api, tmp_path, seed):
    output = tmp_path / "dataset"
    argv = [f"--gbif_api_url={api.base_url}", f"--query={json.dumps({'speciesKey': SPECIES})}", "--label=speciesKey",
            "--split_streams_by=speciesKey", f"--nb_samples={NB_SAMPLES}", "--weighted_streams", f"--nb_samples_per_stream={CAP}",
            f"--seed={seed}", f"--output={output}", "--allow_private_hosts", "--runner=FnApiRunner"]
    assert run(argv) == 0
    sizes = {(str(s),): n for s, n in zip(SPECIES, SIZES, strict=True)}
    expected = compute_quotas(sizes, nb_samples=NB_SAMPLES, nb_samples_per_stream=CAP, weighted=True, seed=seed)
    got = Counter((row.label,) for row in read_manifest(str(output)))
    assert {stream: got.get(stream, 0) for stream in sizes} == expected
    assert expected[(str(SPECIES[-1]),)] == CAP and sum(expected.values()) == NB_SAMPLES
