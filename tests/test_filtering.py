"""FilterMedia: licence filter and one record per URL, on the local runner."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import MediaRecord
from beam_gbif.transforms.filtering import FilterMedia, FilterSettings
from pipelines import stages
from pipelines.gbif_media import make_options
from pipelines.options import GbifMediaOptions


def _record(url: str, key: int, code: str = "CC0_1_0") -> MediaRecord:
    return MediaRecord(url=url, label="1", occurrence_key=key, license_code=code)


@pytest.mark.parametrize("spill", [False, True], ids=["group_by_key", "on_disk"])
def test_duplicate_urls_keep_the_lowest_occurrence_key(spill, tmp_path):
    records = [_record("http://h/a.jpg", 9), _record("http://h/a.jpg", 3), _record("http://h/a.jpg", 5), _record("http://h/b.jpg", 7)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        kept = pipeline | beam.Create(records) | FilterMedia(FilterSettings(scratch_dir=str(tmp_path) if spill else None))
        assert_that(kept | beam.Map(lambda r: (r.url, r.occurrence_key)), equal_to([("http://h/a.jpg", 3), ("http://h/b.jpg", 7)]))
    counters = pipeline.result.metrics().query()["counters"]
    assert {c.key.metric.name: c.committed for c in counters}["duplicate_urls"] == 2


def test_licence_filter_keeps_only_the_listed_codes():
    records = [_record("http://h/a.jpg", 1, "CC0_1_0"), _record("http://h/b.jpg", 2, "UNKNOWN"),
               _record("http://h/c.jpg", 3, "CC_BY_NC_4_0")]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        kept = pipeline | beam.Create(records) | FilterMedia(FilterSettings(licenses=["CC0_1_0", "CC_BY_4_0"]))
        assert_that(kept | beam.Map(lambda r: r.url), equal_to(["http://h/a.jpg"]))


def test_unknown_licence_code_is_a_clear_error():
    options = make_options(["--licenses", "CC0_1_0,CC-BY"]).view_as(GbifMediaOptions)
    with pytest.raises(OptionError, match="unknown licence code.*CC-BY"):
        stages.filter_media(options)
