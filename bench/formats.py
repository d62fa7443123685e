"""Dataset-format benchmark: whole CLI runs from the local media server into each --output_format.

    python bench/formats.py                        # 50,000 records (~12 KB JPEGs), every format, shards of 1000
    python bench/formats.py --records 5000         # a quick check
    python bench/formats.py --formats imagefolder,webdataset --shard_size 500

Every format runs the same CLI a user runs (``python -m pipelines.gbif_media --source urls ...``, FnApiRunner,
every default of the job: fsync, manifest, stats.json, classes.json) on the same URL list (20 labels, splits
train=0.9,test=0.1) into a fresh folder, one after the other, imagefolder first. Per format:

  * files/s and wall s: WHOLE-PROCESS figures (fork to exit: start-up, downloads, shards, manifest), and the
    ratio to imagefolder's files/s on the same run (target: the sharded formats within 10%, i.e. >= 0.90);
  * bytes on disk: everything under the output folder once the run is done (the staging folder is gone by then);
  * peak RSS: the largest single process (GNU time's ru_maxrss, see bench/download.py's run_measured) and the
    sampled sum over the process tree (target < 1 GB).

The media server runs in this process on 127.0.0.1 (nothing else is contacted).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download import MIB, NO_NETWORK_ENV, PROJECT, run_measured  # noqa: E402  (bench/download.py's measuring)

from beam_gbif.core.shards import IMAGEFOLDER, OUTPUT_FORMATS  # noqa: E402
from beam_gbif.testing.media_server import MediaServer  # noqa: E402


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_listing(server: MediaServer, path: Path, records: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write("url,label\n")
        for i in range(records):
            out.write(f"{server.url(f'b{i}')},species {i % 20}\n")


def beam_command(listing: Path, output: Path, output_format: str, shard_size: int) -> list[str]:
    return [sys.executable, "-m", "pipelines.gbif_media", "--source=urls", f"--input={listing}", "--label=label",
            "--random_subsets=train=0.9,test=0.1", f"--output={output}", f"--output_format={output_format}",
            f"--shard_size={shard_size}", "--max_concurrency=256", "--per_host_concurrency=256", "--allow_private_hosts=true"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--shard_size", type=int, default=1000)
    parser.add_argument("--formats", default=",".join(OUTPUT_FORMATS))
    parser.add_argument("--image_bytes", type=int, default=12_000)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder, deleted at the end")
    args = parser.parse_args()
    formats = [name for name in args.formats.split(",") if name]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="beam-gbif-formats-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **NO_NETWORK_ENV, "PYTHONPATH": str(PROJECT)}
    rows = []
    with MediaServer(image_size=args.image_bytes) as server:
        listing = workdir / "urls.csv"
        write_listing(server, listing, args.records)
        for output_format in formats:
            output = workdir / output_format
            shutil.rmtree(output, ignore_errors=True)
            measured = run_measured(beam_command(listing, output, output_format, args.shard_size), env, args.timeout,
                                    workdir / f"{output_format}.log", cwd=PROJECT)
            rows.append((output_format, measured, disk_bytes(output)))
            shutil.rmtree(output, ignore_errors=True)
    base = next((m for name, m, _ in rows if name == IMAGEFOLDER and m.code == 0), None)
    print(f"\n{args.records} records x {args.image_bytes} B, shards of {args.shard_size}, whole CLI runs (FnApiRunner)")
    header = ("format", "exit", "wall s", "files/s", "vs imagefolder", "disk MiB", "peak RSS MiB", "tree RSS MiB")
    print("{:<12} {:>4} {:>8} {:>8} {:>14} {:>9} {:>12} {:>12}".format(*header))
    for name, measured, size in rows:
        rate = args.records / measured.seconds
        ratio = f"{rate / (args.records / base.seconds):.2f}" if base else "-"
        print(f"{name:<12} {measured.code:>4} {measured.seconds:>8.1f} {rate:>8.0f} {ratio:>14} {size / MIB:>9.1f} "
              f"{measured.peak_rss_mb:>12.0f} {measured.tree_rss_mb:>12.0f}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
