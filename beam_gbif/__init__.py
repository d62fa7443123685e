"""beam-gbif: GBIF occurrence media to machine-learning image datasets, with Apache Beam."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/beam-gbif/beam-gbif"
DEFAULT_USER_AGENT = f"beam-gbif/{__version__} (+{PROJECT_URL})"
# Namespace of every Beam metric counter the pipeline reports (Dataflow UI, stats.json "counters").
METRICS_NAMESPACE = "beam_gbif"
