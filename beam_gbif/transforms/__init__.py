"""One composite PTransform per stage, each built from a frozen settings dataclass (see ARCHITECTURE.md)."""

from beam_gbif.transforms import coders  # noqa: F401  (registers MediaRecord's coder with Beam)
