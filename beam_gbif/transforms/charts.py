"""The dataset card's charts (PNG, matplotlib's Agg backend): images per label, per split, per licence, failures.

matplotlib is optional (``pip install beam-gbif[report]``): without it ``chart_pngs`` returns nothing
and the card has its tables only.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from beam_gbif.core.card import TOP_LABELS, count_rows

# (file name beside the card, title, what is counted)
CHARTS = (
    ("chart_labels.png", "Images per label", "labels"),
    ("chart_splits.png", "Images per split", "splits"),
    ("chart_licences.png", "Records per licence", "licences"),
    ("chart_failures.png", "Failures by reason", "failures"),
    ("chart_failure_hosts.png", "Failures by host", "hosts"),
)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _sorted_counts(counts: Mapping[str, int], limit: int = TOP_LABELS) -> list[tuple[str, int]]:
    return sorted(((str(name) or "(none)", int(n)) for name, n in counts.items() if n), key=lambda kv: (-kv[1], kv[0]))[:limit]


def chart_data(stats: Mapping[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """What each chart shows, as (name, count) bars, largest first; a chart without bars is not drawn."""
    return {
        "labels": [(row[0], row[2]) for row in count_rows(stats, by_split=False) if row[2]][:TOP_LABELS],
        "splits": _sorted_counts({row[0]: row[2] for row in count_rows(stats, by_split=True)}),
        "licences": _sorted_counts(stats.get("by_license", {})),
        "failures": _sorted_counts({k: v for k, v in stats.get("by_status", {}).items() if k.startswith("FAILED")}),
        "hosts": _sorted_counts(stats.get("failed_by_host", {}), limit=20),
    }


def bar_figure(title: str, bars: list[tuple[str, int]]) -> Any:
    """A horizontal bar chart, the largest bar on top (names stay readable however many there are)."""
    from matplotlib.figure import Figure  # a Figure with no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(7, max(2.0, 0.28 * len(bars) + 1.2)), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    names, values = [name[:40] for name, _ in reversed(bars)], [value for _, value in reversed(bars)]
    axes.barh(range(len(bars)), values, color="#4c72b0")
    axes.set_yticks(range(len(bars)), names, fontsize=8)
    axes.set_title(title)
    axes.bar_label(axes.containers[0], fontsize=7, padding=2)
    return figure


def chart_pngs(stats: Mapping[str, Any]) -> list[tuple[str, str, bytes]]:
    """(file name, title, PNG bytes) of every chart with something to show; [] without matplotlib."""
    if not have_matplotlib():
        return []
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    data = chart_data(stats)
    pngs = []
    for name, title, key in CHARTS:
        if not data[key]:
            continue
        figure = bar_figure(title, data[key])
        FigureCanvasAgg(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        pngs.append((name, title, buffer.getvalue()))
    return pngs
