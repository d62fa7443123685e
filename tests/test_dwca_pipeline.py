"""The DwC-A source composes with the whole job: licence filter, sampling, splits, download, manifest, stats."""

from __future__ import annotations

import json
import zipfile
from collections import Counter

import pytest

from beam_gbif.testing.media_server import MediaServer
from beam_gbif.testing.synthetic_dwca import write_synthetic_dwca
from beam_gbif.transforms.manifest import read_manifest
from pipelines.gbif_media import run


@pytest.mark.usefixtures("fresh_dwca_memo")
def test_synthetic_archive_to_an_imagefolder_dataset(tmp_path):
    output = tmp_path / "dataset"
    with MediaServer() as media:
        summary = write_synthetic_dwca(tmp_path / "archive.zip", occurrences=300, media=450, species=4, datasets=3,
                                       media_base_url=media.base_url)
        code = run([
            f"--dwca={summary.path}", f"--dwca_root_path={tmp_path / 'cache'}", "--label=speciesKey", "--split_streams_by=datasetKey",
            "--nb_samples_per_stream=10", "--random_subsets=train=0.8,test=0.2", "--licenses=CC0_1_0,CC_BY_4_0",
            f"--output={output}", "--allow_private_hosts", "--runner=FnApiRunner",
        ])
    assert code == 0
    stats = json.loads((output / "stats.json").read_text())
    assert stats["by_status"] == {"DOWNLOADED": 30}  # 3 datasets x 10, each has far more licensed images
    assert stats["by_source"] == {"dwca:10.15468/dl.synth1": 30}
    # The archive is opened by the pipeline, not when the graph is built: its citation reaches stats.json through build().
    (download,) = stats["gbif_downloads"]
    assert download["doi"] == "10.15468/dl.synth1" and download["citation"].endswith("https://doi.org/10.15468/dl.synth1")
    assert set(stats["by_license"]) <= {"CC0_1_0", "CC_BY_4_0"}
    files = sorted(p.relative_to(output) for p in output.glob("*/*/*.jpg"))
    assert len(files) == 30 and {f.parts[0] for f in files} <= {"train", "test"}
    with zipfile.ZipFile(summary.path) as archive:
        lines = archive.read("occurrence.txt").decode().splitlines()
    header = lines[0].split("\t")
    species = {row[header.index("speciesKey")] for row in (line.split("\t") for line in lines[1:])}
    assert {f.parts[1] for f in files} <= species
    manifest = read_manifest(str(output))
    assert len(manifest) == 30 and all(r.rights_holder.startswith('Holder "') and r.creator for r in manifest)  # attribution kept
    assert Counter(r.split for r in manifest) == Counter(f.parts[0] for f in files)
