"""Shared test set-up: nothing leaves 127.0.0.1, real GBIF data comes from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV  # stdlib only: safe before the env is set

# Google's auth libraries probe the GCE metadata server when looking for credentials; point
# them at a closed loopback port so no test ever sends traffic off the machine.
os.environ.update(NO_METADATA_ENV)

SHARED_DATA = Path(os.environ.get("BEAM_GBIF_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

# The real GBIF download in shared/data/dwca.
REAL_DWCA_KEY = "0026367-210914110416597"
REAL_DWCA_DOI = "10.15468/dl.jd3hup"

# The FnApiRunner is the DirectRunner's in-process engine, pinned so tests never try to fetch Prism.
TEST_RUNNER = "FnApiRunner"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real GBIF test data not found at {SHARED_DATA} (set BEAM_GBIF_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture()
def real_zip(shared_data: Path) -> Path:
    return shared_data / "dwca" / f"{REAL_DWCA_KEY}.zip"


@pytest.fixture()
def fresh_dwca_memo():
    """Prepared archives are memoised per process; each test starts and ends without them."""
    from beam_gbif.io.dwca.archive import forget_prepared_archives

    forget_prepared_archives()
    yield
    forget_prepared_archives()


@pytest.fixture
def fresh(api):
    """The test module's ``api`` fixture (a FakeGbifApi) without earlier tests' faults and request log."""
    api.clear_faults()
    api.clear_requests()
    return api


@pytest.fixture(scope="module")
def media():
    """A local media server for the test module (real image bytes, faults on demand)."""
    from beam_gbif.testing.media_server import MediaServer

    with MediaServer() as server:
        yield server
