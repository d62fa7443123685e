"""What a killed run leaves in a dataset root, and its removal before the next run writes there.

A run killed mid-way can leave Beam's file-sink temp folders (``beam-temp-*``, where WriteToAvro
and WriteToText write their shards before renaming them into place: in ``manifest/`` and beside
ATTRIBUTION.csv) and the hidden temp files of an atomic local write (``.<name>.<id>.tmp``: media
files, stats.json). None of them is part of the dataset, and no later run would otherwise look at
them, so the next run removes them before it starts writing.
"""

from __future__ import annotations

import logging

from beam_gbif.io.manifest_files import MANIFEST_DIR
from beam_gbif.io.store import Store

_LOG = logging.getLogger(__name__)

# Beam's FileBasedSink names its temp folder beam-temp-<output file name>-<uuid>, beside the output.
BEAM_TEMP_PREFIX = "beam-temp-"
# The folders whose files Beam's sinks write: the root (ATTRIBUTION.csv) and the manifest's.
_SINK_FOLDERS = ("", MANIFEST_DIR)


def remove_leftovers(store: Store) -> list[str]:
    """Removes killed runs' temp folders and temp files from ``store``; returns what was removed (relative paths).

    Call it only while no run writes into this root: a running sink's temp folder looks the same.
    """
    removed = []
    for folder in _SINK_FOLDERS:
        for name in store.list_folders(folder, BEAM_TEMP_PREFIX):
            rel = f"{folder}/{name}" if folder else name
            store.delete_folder(rel)
            removed.append(rel + "/")
    for rel in store.temp_files():
        store.delete(rel)
        removed.append(rel)
    if removed:
        _LOG.info("output: removed %d temp file(s) or folder(s) an earlier run left in %s", len(removed), store.root)
    return removed
