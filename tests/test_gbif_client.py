"""GbifClient against the fake GBIF API: retries, errors, politeness, pickling; query validation."""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import pickle
import time
import traceback

import pytest

from beam_gbif.core.errors import OptionError
from beam_gbif.core.http import parse_retry_after
from beam_gbif.core.query import validate_query
from beam_gbif.io.dwca.meta import DwcaError
from beam_gbif.io.dwca.request import download_key_for_predicate
from beam_gbif.io.gbif.client import GbifApiError, GbifClient, check_credentials_url
from beam_gbif.testing.fake_downloads import DownloadFaults, FakeDownload, download_routes
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.gcs_emulator import free_port
from beam_gbif.testing.synthetic import SyntheticOccurrences


@pytest.fixture(scope="module")
def api():
    with FakeGbifApi(SyntheticOccurrences([11, 22], ["a", "b"], per_stream=50, seed=1)) as server:
        yield server


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(api: FakeGbifApi, **kwargs) -> tuple[GbifClient, Sleeps]:
    sleeps = Sleeps()
    return GbifClient(api.base_url, "beam-gbif-tests/1 (+mailto:test@example.org)", sleep=sleeps, **kwargs), sleeps


def test_user_agent_count_and_facets(fresh):
    client, _ = client_for(fresh)
    assert client.count({"speciesKey": ["11"]}) == 100
    assert client.facet_counts({"speciesKey": ["11", "22"]}, "datasetKey", page_size=1) == {"a": 100, "b": 100}
    assert fresh.requests[0].query["limit"] == "0"
    assert len(fresh.search_requests()) == 1 + 3  # a facet page of 1 value per call, until a short page


def test_429_with_retry_after_then_success(fresh):
    fresh.inject(status=429, retry_after=7, times=2)
    client, sleeps = client_for(fresh)
    assert client.count({}) == 200
    assert sleeps == [7.0, 7.0] and client.retries == 2 and len(fresh.search_requests()) == 3


def test_retry_after_is_capped_and_parses_http_dates(fresh):
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31
    assert parse_retry_after("nonsense") is None and parse_retry_after("12") == 12.0
    fresh.inject(status=429, retry_after=1000)
    client, sleeps = client_for(fresh, retry_after_max=5.0)
    assert client.count({}) == 200 and sleeps == [5.0]  # a 1000 s Retry-After waits retry_after_max


def test_500_then_success_backs_off_with_jitter(fresh):
    fresh.inject(status=500, times=3)
    client, sleeps = client_for(fresh, backoff_base=1.0, backoff_max=3.0)
    assert client.count({}) == 200
    assert len(sleeps) == 3 and all(0 <= s <= bound for s, bound in zip(sleeps, [1, 2, 3], strict=True))


def test_dropped_connection_and_truncated_body_are_retried(fresh):
    fresh.inject(drop=True)
    fresh.inject(truncate=True)
    client, sleeps = client_for(fresh)
    assert len(client.search({"limit": 50})["results"]) == 50
    assert len(sleeps) == 2


def test_permanent_500_is_a_clear_error_naming_url_and_status(fresh):
    fresh.inject(status=500, times=10, body="database on fire")
    client, sleeps = client_for(fresh, max_retries=2)
    with pytest.raises(GbifApiError) as raised:
        client.search({"speciesKey": "11", "limit": 5})
    message = str(raised.value)
    assert "HTTP 500" in message and f"{fresh.base_url}/occurrence/search?speciesKey=11&limit=5" in message
    assert "database on fire" in message and raised.value.status == 500 and len(sleeps) == 2


def test_other_4xx_fails_at_once(fresh):
    client, sleeps = client_for(fresh)
    with pytest.raises(GbifApiError, match=r"HTTP 400 .*offset=99999.*100000"):
        client.search({"offset": 99_999, "limit": 300})
    assert sleeps == [] and len(fresh.search_requests()) == 1


def test_timeout_is_retried_then_reported(fresh):
    fresh.inject(delay=1.0, times=5)
    client, _ = client_for(fresh, timeout=(1.0, 0.2), max_retries=1)
    with pytest.raises(GbifApiError, match="2 attempt"):
        client.count({})


def test_pickles_without_a_session(fresh):
    client, _ = client_for(fresh)
    client.count({})
    clone = pickle.loads(pickle.dumps(client))
    assert clone.count({"datasetKey": "a"}) == 100


def test_download_streams_to_a_file(fresh):
    client, _ = client_for(fresh)
    sink = io.BytesIO()
    seen = []
    written = client.download(f"{fresh.base_url}/occurrence/search?limit=3", sink, progress=seen.append)
    assert written == len(sink.getvalue()) > 0 and seen[-1] == written
    fresh.inject(truncate=True)
    again = io.BytesIO()
    assert client.download("occurrence/search?limit=3", again) == written  # rewound and retried after the truncation


def test_query_validation_names_unknown_fields_and_adds_media_type():
    assert validate_query({"speciesKey": ["1", "2"], "COUNTRY": "DK"}, media_type="StillImage") == {
        "speciesKey": ["1", "2"], "country": ["DK"], "mediaType": ["StillImage"]}
    assert validate_query({"mediaType": ["Sound"]}, media_type="StillImage") == {"mediaType": ["Sound"]}
    with pytest.raises(OptionError, match=r"'speciesKy'.*did you mean 'speciesKey'"):
        validate_query({"speciesKy": "1"})
    with pytest.raises(OptionError, match="'offset'"):
        validate_query({"offset": "10"})


# -- GBIF credentials (GBIF_USER / GBIF_PWD, for a download requested from a predicate) ------------------
PASSWORD = "Pa55-w0rd-hunter2-7f3a"
PREDICATE = '{"type": "equals", "key": "ELEVATION", "value": "9500"}'


class RefusingSession:
    """Stands in for requests.Session where no request may be sent: it records and fails any attempt."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def post(self, url: str, **kwargs: object) -> None:
        self.calls.append(url)
        raise AssertionError(f"a request was sent to {url}")


@pytest.fixture()
def gbif_credentials(monkeypatch):
    monkeypatch.setenv("GBIF_USER", "ann")
    monkeypatch.setenv("GBIF_PWD", PASSWORD)


@pytest.mark.parametrize("api_url", ["http://api.gbif.org/v1", "http://10.0.0.1/v1", "http://localhost:8080/v1",
                                     "http://127.0.0.1.nip.io/v1", "ftp://api.gbif.org/v1", "api.gbif.org/v1"])
def test_gbif_credentials_are_refused_unless_https_or_loopback_http_before_any_request(gbif_credentials, api_url):
    client = GbifClient(api_url)
    client._session = session = RefusingSession()
    with pytest.raises(OptionError, match="--gbif_api_url .*sent only over https") as refused:
        download_key_for_predicate(client, PREDICATE)
    assert session.calls == [] and PASSWORD not in str(refused.value)


@pytest.mark.parametrize("url", ["https://api.gbif.org/v1/occurrence/download/request", "http://127.0.0.1:8080/v1/x",
                                 "http://[::1]:8080/v1/x"])
def test_gbif_credentials_may_go_over_https_or_to_a_loopback_test_server(url):
    check_credentials_url(url)  # the decision only: nothing is sent


@pytest.fixture()
def download_api():
    # The fake expects other credentials than the test sends: every request is a 401 unless a fault comes first.
    new = FakeDownload(key="0000042-210914110416597", archive=b"PK")
    routes = download_routes([], DownloadFaults(), requestable=new, credentials=("ann", "another-password"))
    with FakeGbifApi(extra_routes=[routes]) as api:
        yield api


def test_gbif_password_is_in_no_log_line_nor_error(download_api, gbif_credentials, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, requests' and urllib3's included
    token = base64.b64encode(f"ann:{PASSWORD}".encode()).decode()
    echo = f"upstream said: Authorization: Basic {token} (user ann, password {PASSWORD})"  # a server echoing the request
    download_api.inject("/v1/occurrence/download/request", status=500, body=echo)
    download_api.inject("/v1/occurrence/download/request", status=200, body=echo)
    errors = []
    for expected in ("HTTP 500", "not a download key", "HTTP 401"):
        with pytest.raises(DwcaError, match=expected) as failed:
            download_key_for_predicate(GbifClient(download_api.base_url), PREDICATE)
        errors.append(failed.value)
    with pytest.raises(DwcaError, match="could not request") as unreachable:
        download_key_for_predicate(GbifClient(f"http://127.0.0.1:{free_port()}/v1"), PREDICATE)
    errors.append(unreachable.value)
    texts = ["".join(traceback.format_exception(error)) for error in errors] + [caplog.text]
    assert caplog.records, "the requests were logged"
    for text in texts:
        assert PASSWORD not in text and token not in text
