"""``beam-gbif inspect OUTPUT [--verify]``: the summary of an existing dataset from its manifest (local or gs://).

``--verify`` checks every manifest row of a file in the dataset against the file (exists, size,
sha256) and lists the media files no row names; exit code 1 if anything is missing, changed or
unlisted. Files are hashed by a thread pool (hashlib and the storage clients release the GIL),
a bounded number at a time, so memory stays flat however large the dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import posixpath
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from beam_gbif.core.records import IN_DATASET, MediaRecord
from beam_gbif.core.sniff import is_media_file_name
from beam_gbif.io.manifest_files import has_manifest, read_manifest
from beam_gbif.io.store import Store, store_for
from beam_gbif.transforms.stats import StatsCombineFn, format_summary
from pipelines.console import LOG_LEVELS, describe_error, logging_for

_SHOWN = 20  # paths listed per kind of problem; the counts are always whole


def manifest_stats(output: str, rows: Iterable[MediaRecord]) -> dict[str, Any]:
    """The stats dict of a dataset, computed from its manifest rows as the pipeline computes stats.json."""
    combine = StatsCombineFn()
    accumulator = combine.create_accumulator()
    for row in rows:
        accumulator = combine.add_input(accumulator, row)
    return {**combine.extract_output(accumulator), "output": output}


@dataclasses.dataclass
class Verification:
    checked: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    unlisted: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unlisted)


def _check(store: Store, row: MediaRecord) -> str:
    """"" when the file matches its row, else "missing" or "changed"."""
    try:
        size, sha256 = store.describe(row.path)
    except Exception:  # noqa: BLE001 - FileNotFoundError locally, NotFound on GCS: the file is not there
        return "missing" if not store.exists(row.path) else "changed"
    return "" if size == row.bytes and (not row.sha256 or sha256 == row.sha256) else "changed"


def _bounded_map(pool: ThreadPoolExecutor, store: Store, rows: Iterable[MediaRecord], window: int) -> Iterator[tuple[str, str]]:
    """(path, outcome) per row, at most ``window`` checks queued at a time."""
    pending: list[tuple[str, Future]] = []
    iterator = iter(rows)
    while True:
        for row in itertools.islice(iterator, window - len(pending)):
            pending.append((row.path, pool.submit(_check, store, row)))
        if not pending:
            return
        path, future = pending.pop(0)
        yield path, future.result()


def verify(output: str, rows: Sequence[MediaRecord], workers: int = 16) -> Verification:
    """Every file the manifest says is in the dataset against the file; media files in no row are ``unlisted``."""
    started = time.monotonic()
    store = store_for(output)
    in_dataset = [row for row in rows if row.status in IN_DATASET and row.path]
    result = Verification(checked=len(in_dataset))
    with ThreadPoolExecutor(workers, thread_name_prefix="beam-gbif-verify") as pool:
        listing = pool.submit(store.list)
        for path, outcome in _bounded_map(pool, store, in_dataset, window=workers * 8):
            if outcome:
                getattr(result, outcome).append(path)
        named = {row.path for row in rows if row.path}
        result.unlisted = [rel for rel in listing.result() if is_media_file_name(posixpath.basename(rel)) and rel not in named]
    result.seconds = time.monotonic() - started
    return result


def format_verification(result: Verification) -> str:
    lines = [f"verify: {result.checked} files checked in {result.seconds:.1f} s: {len(result.missing)} missing, "
             f"{len(result.changed)} changed, {len(result.unlisted)} unlisted"]
    for kind in ("missing", "changed", "unlisted"):
        paths = sorted(getattr(result, kind))
        lines += [f"  {kind}: {path}" for path in paths[:_SHOWN]]
        if len(paths) > _SHOWN:
            lines.append(f"  {kind}: ... {len(paths) - _SHOWN} more")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    """Prints the dataset's summary (and with --verify the check); 0 when all is well, 1 when verify finds a problem, 2 bad usage."""
    parser = argparse.ArgumentParser(prog="beam-gbif inspect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="The dataset root: a local folder or gs://bucket/prefix.")
    parser.add_argument("--verify", action="store_true", help="Check every file against its manifest row (exists, size, sha256).")
    parser.add_argument("--workers", type=int, default=16, help="Files checked at once.")
    parser.add_argument("--log_level", default=None, choices=LOG_LEVELS)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    with logging_for(args.log_level):
        try:
            if not has_manifest(args.output):
                print(f"beam-gbif: error: {args.output} has no manifest/*.avro: not a beam-gbif dataset (or a run that never "
                      "finished); name the --output of a run", file=sys.stderr)
                return 2
            rows = read_manifest(args.output)
            print(format_summary(manifest_stats(args.output, rows)))
            if not args.verify:
                return 0
            result = verify(args.output, rows, workers=max(1, args.workers))
        except Exception as exc:  # noqa: BLE001 - one or two lines, as for a run
            message, code = describe_error(exc)
            print(f"beam-gbif: error: {message}", file=sys.stderr)
            return code
    print(format_verification(result))
    return 0 if result.ok else 1


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
