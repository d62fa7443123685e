"""beam-gbif: GBIF occurrence media to machine-learning image datasets, with Apache Beam."""

import logging
import os

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/beam-gbif/beam-gbif"
DEFAULT_USER_AGENT = f"beam-gbif/{__version__} (+{PROJECT_URL})"
# Namespace of every Beam metric counter the pipeline reports (Dataflow UI, stats.json "counters").
METRICS_NAMESPACE = "beam_gbif"
# Between INFO and WARNING: the lines a person running beam-gbif reads at the default verbosity
# (the read plan, download progress); INFO is for details such as retries (--log_level info).
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")


def cache_home() -> str:
    """beam-gbif's folder on disk for archives and spills.

    ``$BEAM_GBIF_CACHE``, else ``$XDG_CACHE_HOME/beam-gbif``, else ``~/.cache/beam-gbif``.
    """
    if os.environ.get("BEAM_GBIF_CACHE"):
        return os.environ["BEAM_GBIF_CACHE"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "beam-gbif")
