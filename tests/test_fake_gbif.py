"""The fake GBIF API behaves like api.gbif.org where the project depends on it."""

from __future__ import annotations

import json

import pytest
import requests
from aiohttp import web

from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic import MEDIA_LICENSES, SyntheticOccurrences

SPECIES = [5352251, 3190653]
DATASETS = ["7a3679ef-5582-4aaa-81f0-8c2545cafc81", "50c9509d-22c7-4a22-a47d-8c48425ef4a7"]


@pytest.fixture(scope="module")
def api():
    occurrences = SyntheticOccurrences(SPECIES, DATASETS, per_stream=400, media_base_url="http://127.0.0.1:1", seed=3)
    with FakeGbifApi(occurrences) as server:
        yield server


def search(api: FakeGbifApi, **params) -> requests.Response:
    return requests.get(f"{api.base_url}/occurrence/search", params=params, timeout=10)


def test_base_url_is_loopback_v1(api):
    assert api.base_url.startswith("http://127.0.0.1:") and api.base_url.endswith("/v1")


def test_paging_envelope_and_default_limit(api):
    body = search(api, speciesKey=SPECIES[0]).json()
    assert set(body) == {"offset", "limit", "endOfRecords", "count", "results", "facets"}
    assert body["count"] == 800 and body["limit"] == 20 and len(body["results"]) == 20 and body["endOfRecords"] is False
    keys = []
    for offset in range(0, 800, 300):
        page = search(api, speciesKey=SPECIES[0], limit=300, offset=offset).json()
        keys += [o["key"] for o in page["results"]]
    assert page["endOfRecords"] is True and len(page["results"]) == 200
    assert len(set(keys)) == 800


def test_repeated_parameters_are_or_different_parameters_and(api):
    both = search(api, speciesKey=SPECIES, limit=0).json()["count"]
    one_dataset = search(api, speciesKey=SPECIES, datasetKey=DATASETS[0], limit=0).json()["count"]
    assert both == 1600 and one_dataset == 800
    page = search(api, speciesKey=SPECIES, datasetKey=DATASETS[1], limit=300).json()["results"]
    assert {o["datasetKey"] for o in page} == {DATASETS[1]}
    assert {o["speciesKey"] for o in page} <= set(SPECIES)


def test_limit_is_capped_at_300_and_offset_at_100000(api):
    body = search(api, limit=1000).json()
    assert body["limit"] == 300 and len(body["results"]) == 300
    refused = search(api, limit=300, offset=99_701)
    assert refused.status_code == 400 and "100000" in refused.text
    assert search(api, limit=300, offset=99_700).status_code == 200


def test_limit_zero_gives_count_and_facets_only(api):
    body = search(api, limit=0, facet=["datasetKey", "speciesKey"], facetLimit=1).json()
    assert body["results"] == [] and body["count"] == 1600
    assert [f["field"] for f in body["facets"]] == ["DATASET_KEY", "SPECIES_KEY"]
    assert all(len(f["counts"]) == 1 and f["counts"][0]["count"] == 800 for f in body["facets"])


def test_year_ranges_and_media_type(api):
    all_years = search(api, limit=0, facet="year", facetLimit=100).json()["facets"][0]["counts"]
    in_range = sum(c["count"] for c in all_years if 1995 <= int(c["name"]) <= 2000)
    assert search(api, limit=0, year="1995,2000").json()["count"] == in_range
    sound = search(api, mediaType="Sound", limit=300).json()["results"]
    assert sound and all(any(m["type"] == "Sound" for m in o["media"]) for o in sound)


def test_unknown_parameters_are_ignored_like_gbif(api):
    assert search(api, limit=0, notAField="x").json()["count"] == 1600


def test_get_one_occurrence(api):
    key = search(api, limit=1).json()["results"][0]["key"]
    assert requests.get(f"{api.base_url}/occurrence/{key}", timeout=10).json()["key"] == key
    assert requests.get(f"{api.base_url}/occurrence/1", timeout=10).status_code == 404


def test_fault_injection_and_request_log(api):
    api.clear_requests()
    api.inject(status=429, retry_after=2, times=2)
    first, second, third = (search(api, limit=0) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert first.headers["Retry-After"] == "2"
    api.inject(status=503)
    assert search(api, limit=0).status_code == 503
    api.inject(drop=True)
    with pytest.raises(requests.ConnectionError):
        search(api, limit=0)
    api.inject(truncate=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = search(api, limit=5).content
    logged = api.search_requests()
    assert len(logged) == 6 and logged[0].query["limit"] == "0"


def test_recorded_page_is_served_verbatim(shared_data):
    path = shared_data / "gbif-api" / "occurrence_search_taxonKey_3329049_offset_0.json"
    with FakeGbifApi(recorded_pages=[path, shared_data / "gbif-api" / "occurrence_142316497.json"]) as api:
        assert search(api, taxonKey=3329049, limit=300).json() == json.loads(path.read_text())
        # Its occurrences join the store for every other query.
        assert search(api, taxonKey=3329049, mediaType="StillImage", limit=0).json()["count"] == 287
        occurrence = requests.get(f"{api.base_url}/occurrence/142316497", timeout=10).json()
        assert occurrence["key"] == 142316497


def test_extra_routes_share_the_server():
    def add_ping(app: web.Application) -> None:
        app.router.add_get("/v1/ping", lambda request: web.Response(text="pong"))

    with FakeGbifApi(SyntheticOccurrences([1], ["d"], 1), extra_routes=[add_ping]) as api:
        assert requests.get(f"{api.base_url}/ping", timeout=10).text == "pong"


def test_synthetic_occurrences_are_deterministic_and_realistic():
    def make() -> SyntheticOccurrences:
        return SyntheticOccurrences(SPECIES, DATASETS, per_stream=500, media_base_url="http://127.0.0.1:7", seed=5)

    first, second = make(), make()
    assert [first.occurrence(i) for i in range(0, 2000, 97)] == [second.occurrence(i) for i in range(0, 2000, 97)]
    media = [m for i in range(2000) for m in first.occurrence(i)["media"]]
    urls = [m["identifier"] for m in media if "identifier" in m]
    assert {m["type"] for m in media} == {"StillImage", "Sound"}
    assert any("identifier" not in m for m in media)
    assert len(urls) > len(set(urls))  # some URLs are shared by two occurrences
    assert all(u.startswith("http://127.0.0.1:7/media/") for u in urls)
    assert {m["license"] for m in media} <= set(MEDIA_LICENSES)
    assert max(len(first.occurrence(i)["media"]) for i in range(2000)) == 4
    sizes = SyntheticOccurrences([1, 2], ["a"], stream_sizes={(1, "a"): 3, (2, "a"): 7})
    assert len(sizes) == 10 and sizes.occurrence(9)["speciesKey"] == 2
