"""Run one transform on the local runner and collect the MediaRecords it outputs (for tests and benchmarks)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.records import MediaRecord
from beam_gbif.transforms.stats import metric_counters


def run_transform(
    transform: beam.PTransform,
    workdir: Path,
    *,
    records: Sequence[MediaRecord] | None = None,
    runner_args: Sequence[str] = (),
) -> tuple[list[MediaRecord], dict[str, int]]:
    """``records | transform`` (or ``transform`` alone, for a source) on the FnApiRunner.

    Returns the output records (through files in ``workdir``, removed afterwards, so
    multi-process runs work too) and the run's ``beam_gbif`` counters by name.
    """
    folder = Path(workdir) / f".collected-{uuid.uuid4().hex}"
    out = folder / "records"
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner", *runner_args]))
    start = pipeline if records is None else pipeline | "Records" >> beam.Create(list(records))
    (
        start
        | "Transform" >> transform
        | "ToJson" >> beam.Map(lambda record: json.dumps(record.to_dict()))
        | "Write" >> beam.io.WriteToText(str(out), file_name_suffix=".jsonl")
    )
    result = pipeline.run()
    result.wait_until_finish()
    lines = [line for path in sorted(folder.glob("records*.jsonl")) for line in path.read_text(encoding="utf-8").splitlines()]
    shutil.rmtree(folder)  # leave workdir as it was: tests often list it
    return [MediaRecord.from_dict(json.loads(line)) for line in lines if line], metric_counters(result)
