"""WriteCard: ``OUTPUT/README.md`` (the dataset card), its PNG charts and ``OUTPUT/derived_dataset.csv``.

A local run writes them after the pipeline, from the completed stats.json (``write_card``); on
Dataflow the job writes them itself, one step after stats.json (``WriteCard``).
"""

from __future__ import annotations

import datetime
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam

from beam_gbif import __version__
from beam_gbif.core.card import CARD_FILE, DERIVED_DATASET_FILE, derived_dataset_csv, render_card, stored_by_dataset
from beam_gbif.io.store import join_uri, store_for, write_whole
from beam_gbif.transforms.charts import CHARTS, chart_pngs

# Options that change nothing in the dataset, left out of the card (a password-free --user_agent may stay).
_NOT_SHOWN = frozenset({"allow_private_hosts", "log_level"})


def run_facts(argv: Sequence[str], options: Mapping[str, Any], source: str, formats: Sequence[str] = ()) -> dict[str, Any]:
    """What the card says about how the dataset was made: command line, options given, version, time, source, seed."""
    given = {name: value for name, value in options.items() if value not in (None, False, "") and name not in _NOT_SHOWN}
    described = {"api": f"GBIF occurrence search {options.get('query') or '{}'}",
                 "dwca": f"GBIF download {options.get('dwca') or options.get('gbif_download_predicate')}",
                 "urls": f"URL list {options.get('input') or options.get('retry_failed_from')}"}.get(source, source)
    return {
        "command": shlex.join(["beam-gbif", *argv]),
        "options": given,
        "version": __version__,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": described,
        "seed": options.get("seed", 0),
        "label_field": options.get("label_field", ""),
        "formats": list(formats),
    }


def write_card(output: str, stats: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    """Writes the card, its charts and derived_dataset.csv under ``output``; returns the names written.

    Charts an earlier run drew and this one has no data for (no failures now) are removed, so the
    card never sits beside a stale picture.
    """
    charts = chart_pngs(stats)
    for name, _, png in charts:
        write_whole(join_uri(output, name), png, content_type="image/png")
    drawn = {name for name, _, _ in charts}
    store = store_for(output)
    for name, _, _ in CHARTS:
        if name not in drawn:
            store.delete(name)
    written = sorted(drawn)
    if stored_by_dataset(stats):
        write_whole(join_uri(output, DERIVED_DATASET_FILE), derived_dataset_csv(stats).encode("utf-8"), content_type="text/csv")
        written.append(DERIVED_DATASET_FILE)
    card = render_card(stats, facts, [(name, title) for name, title, _ in charts])
    write_whole(join_uri(output, CARD_FILE), card.encode("utf-8"), content_type="text/markdown")
    return [*written, CARD_FILE]


class _WriteCardFn(beam.DoFn):
    def __init__(self, output: str, facts: Mapping[str, Any]) -> None:
        self._output = output
        self._facts = dict(facts)

    def process(self, stats: Mapping[str, Any]) -> Iterable[str]:
        yield from write_card(self._output, stats, self._facts)


class WriteCard(beam.PTransform):
    """The stats dict (WriteManifest's output) → the card files under ``output``; emits the names written."""

    def __init__(self, output: str, facts: Mapping[str, Any]) -> None:
        super().__init__()
        self._output = output
        self._facts = dict(facts)

    def expand(self, stats: beam.PCollection) -> beam.PCollection:
        return stats | "WriteCardFiles" >> beam.ParDo(_WriteCardFn(self._output, self._facts))
