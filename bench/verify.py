"""``beam-gbif inspect OUTPUT --verify`` on a large local dataset: wall time of the check alone.

    python bench/verify.py                      # 100,000 files of 2 KiB, 16 workers
    python bench/verify.py --files 20000 --workers 4

The dataset (media files and a manifest) is written once into --workdir (kept for reruns); the figure
is verify()'s own time: listing the folder, hashing every file, comparing with the manifest rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from beam_gbif.io.manifest_files import has_manifest, read_manifest
from beam_gbif.testing.fake_dataset import write_fake_dataset
from pipelines.inspect import format_verification, verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=2048, help="Bytes per file.")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "beam-gbif-bench-verify"))
    args = parser.parse_args()
    root = Path(args.workdir) / f"{args.files}x{args.size}"
    if not has_manifest(str(root)):
        started = time.monotonic()
        write_fake_dataset(root, args.files, labels=100, size=args.size)
        print(f"wrote {args.files} files in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    rows = read_manifest(str(root))
    read_seconds = time.monotonic() - started
    result = verify(str(root), rows, workers=args.workers)
    print(f"manifest read in {read_seconds:.1f} s")
    print(format_verification(result))
    print(f"{result.checked / max(result.seconds, 1e-9):,.0f} files/s")


if __name__ == "__main__":
    main()
