"""Option parsing: clear errors for bad input, the same values from a CLI and a template."""

from __future__ import annotations

import json

import pytest

from beam_gbif.io.dwca.request import parse_predicate
from pipelines.gbif_media import DEFAULT_LOCAL_RUNNER, make_options
from pipelines.options import (
    GbifMediaOptions,
    OptionError,
    is_dry_run,
    normalize_argv,
    parse_query,
    parse_ratios,
    parse_subset_streams,
)


def test_query_lists_and_scalars_become_string_lists():
    query = parse_query('{"speciesKey": [5352251, 3190653], "country": "FR", "hasCoordinate": true}')
    assert query == {"speciesKey": ["5352251", "3190653"], "country": ["FR"], "hasCoordinate": ["true"]}


def test_query_from_file(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"datasetKey": ["a", "b"]}))
    assert parse_query(f"@{path}") == {"datasetKey": ["a", "b"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"speciesKey": [1,', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"speciesKey": []}', "empty list"),
        ('{"speciesKey": {"a": 1}}', "unsupported value"),
        ("@/nonexistent/query.json", "cannot read"),
    ],
)
def test_bad_query_is_a_clear_error(text, message):
    with pytest.raises(OptionError, match=message):
        parse_query(text)


def test_ratios_accept_pairs_and_json():
    assert parse_ratios("train=0.9,test=0.1") == {"train": 0.9, "test": 0.1}
    assert parse_ratios('{"train": 0.8, "val": 0.1, "test": 0.1}') == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert parse_ratios(None) == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("train=0.9,test=0.2", "sum to 1"),
        ("train=0.9,test", "not name=ratio"),
        ("train=abc,test=0.1", "not a number"),
        ("train=1.1,test=-0.1", ">= 0"),
        ("../x=1", "not a valid split name"),
        ("train=0.5,train=0.5", "given twice"),
    ],
)
def test_bad_ratios_are_clear_errors(text, message):
    with pytest.raises(OptionError, match=message):
        parse_ratios(text)


def test_subset_streams_rules_are_checked():
    assert parse_subset_streams('{"test": {"datasetKey": ["x"]}, "train": "*"}')["train"] == "*"
    with pytest.raises(OptionError, match="rule of 'test'"):
        parse_subset_streams('{"test": 3}')


SECRET = "sk_live_51Hq9SECRETxK2vQ7pZ"  # looks like an API key: must never reach an error message


@pytest.mark.parametrize("parse, option", [(parse_query, "query"), (parse_ratios, "random_subsets"),
                                           (parse_subset_streams, "subset_streams"), (parse_predicate, "gbif_download_predicate")])
@pytest.mark.parametrize("content", [f"GBIF_PWD={SECRET}\n", f'{{"token": "{SECRET}"', f"[1, 2, {SECRET}]"],
                         ids=["env_file", "unterminated_json", "bad_json_array"])
def test_an_at_file_that_is_not_json_names_its_path_never_its_contents(tmp_path, parse, option, content):
    path = tmp_path / "wrong-file.json"
    path.write_text(content)
    with pytest.raises(OptionError) as caught:
        parse(f"@{path}")
    message = str(caught.value)
    assert f"--{option}" in message and str(path) in message and "not valid JSON" in message
    assert SECRET not in message and "GBIF_PWD" not in message and "token" not in message


@pytest.mark.parametrize("parse, value, message", [
    (parse_query, {"speciesKey": {"token": SECRET}}, "unsupported value"),
    (parse_query, {"speciesKey": ["1", [SECRET]]}, "unsupported value"),
    (parse_ratios, {"train": SECRET}, "not a number"),
    (parse_ratios, {"train": 1.5, "test": f"-{SECRET}"}, "not a number"),
    (parse_subset_streams, {"test": SECRET}, "rule of 'test'"),
], ids=["query_object", "query_nested_list", "ratio_text", "ratio_negative_text", "subset_rule"])
def test_an_at_file_value_is_never_quoted_in_an_error(tmp_path, parse, value, message):
    path = tmp_path / "values.json"
    path.write_text(json.dumps(value))
    with pytest.raises(OptionError, match=message) as caught:
        parse(f"@{path}")
    assert SECRET not in str(caught.value)


def test_an_at_file_that_is_not_text_is_a_clear_error(tmp_path):
    path = tmp_path / "key.der"
    path.write_bytes(b"\x30\x82\xff\xfe" + SECRET.encode())
    with pytest.raises(OptionError, match="cannot read .*key.der: not UTF-8 text") as caught:
        parse_query(f"@{path}")
    assert SECRET not in str(caught.value)


def test_label_and_dry_run_map_onto_their_destinations():
    argv = normalize_argv(["--label", "scientificName", "--dry_run", "--label=family"])
    assert argv == ["--label_field", "scientificName", "--dry_run=true", "--label_field=family"]
    options = make_options(["--label", "family", "--dry_run", "--output", "x"])
    assert options.view_as(GbifMediaOptions).label_field == "family"
    assert is_dry_run(options)
    assert not is_dry_run(make_options(["--output", "x"]))


@pytest.mark.parametrize("argv", [["--dry_run=false"], ["--dry_run", "false"], ["--dry_run=0"], ["--dry_run", "no"]])
def test_a_false_dry_run_is_dropped_so_dataflow_submits(argv):
    # Beam's own dry_run option is an untyped string: "false" would stop a Dataflow submission.
    assert normalize_argv(argv + ["--output", "x"]) == ["--output", "x"]
    assert not is_dry_run(make_options(argv))


def test_a_dry_run_that_is_not_a_boolean_is_a_clear_error():
    with pytest.raises(OptionError, match="--dry_run: expected true or false"):
        is_dry_run(make_options(["--dry_run=maybe"]))


@pytest.mark.parametrize("argv", [["--dry_run"], ["--dry_run=true"], ["--dry_run", "True"], ["--dry_run", "--output", "x"]])
def test_a_true_dry_run_reaches_beam(argv):
    assert normalize_argv(argv)[0] == "--dry_run=true"
    assert is_dry_run(make_options(argv))


def test_template_strings_parse_like_cli_values():
    cli = make_options(["--weighted_streams", "--nb_samples", "-1", "--all_media"]).view_as(GbifMediaOptions)
    template = make_options(["--weighted_streams=true", "--nb_samples=-1", "--all_media=True"]).view_as(GbifMediaOptions)
    for name in ("weighted_streams", "nb_samples", "all_media"):
        assert getattr(cli, name) == getattr(template, name)
    assert make_options(["--weighted_streams=false"]).view_as(GbifMediaOptions).weighted_streams is False


def test_local_runner_is_pinned_unless_given():
    from apache_beam.options.pipeline_options import StandardOptions

    assert make_options([]).view_as(StandardOptions).runner == DEFAULT_LOCAL_RUNNER
    assert make_options(["--runner", "DirectRunner"]).view_as(StandardOptions).runner == "DirectRunner"


def test_help_lists_beam_gbif_options(capsys):
    from pipelines.gbif_media import run

    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--query", "--label_field", "--split_streams_by", "--nb_samples", "--licenses", "--max_concurrency"):
        assert flag in text
