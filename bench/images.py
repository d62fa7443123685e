"""Image benchmark (issue 12): beam-gbif resizing vs img2dataset 1.47 resizing vs beam-gbif storing originals.

    python bench/images.py                         # 5,000 camera-like JPEGs, 50 ms latency, --image_size 256 keep_ratio
    python bench/images.py --images 500 --skip img2dataset     # a quick check

One local server (in this process, 127.0.0.1) serves --images URLs of realistic JPEGs: 1600×1200 to 4000×3000,
0.5–3 MB, every 5th stored sideways (EXIF orientation 6), every 3rd with GPS tags. Encoding thousands of 12-megapixel
photos would take longer than the benchmark, so --unique distinct photos are generated once into
<workdir>/photos/ (a cache kept between runs) and URL n serves photo n % unique with a COM segment naming n: every
body is different, and each costs the decoders what a distinct photo of that size costs.

Rows, each its own subprocess on the same URL list into a fresh folder, one after the other:

  * beam-gbif resized: ``python -m pipelines.gbif_media --source urls --input LIST --output OUT --allow_private_hosts true
    --image_size 256 --resize_mode keep_ratio --max_concurrency 128 --per_host_concurrency 128``;
  * img2dataset 1.47 (its own venv under --workdir, installed from PyPI on first use): files output, the same size
    and mode, 2 processes × 64 threads;
  * beam-gbif originals: the same CLI without --image_size (every body still decoded: --validate_images).

Figures are WHOLE-PROCESS: files/s and wall s from fork to exit; CPU s is user + system time of the tool's whole
process tree (wait4); peak RSS is the largest single process (GNU time's %M); bytes stored is the sum of the .jpg
files written. Target: beam-gbif resized >= 1.5 × img2dataset's files/s, peak RSS < 1.5 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from beam_gbif.io.images import ImageSettings, prepare  # noqa: E402
from beam_gbif.testing.images import photo_like  # noqa: E402
from bench.download import BEAM_MODULE, NO_NETWORK_ENV, BodyServer, Measured, ensure_venv, run_measured  # noqa: E402

SIZES = [(1600, 1200), (2048, 1536), (2400, 1800), (3000, 2250), (3264, 2448), (4000, 3000)]


def _make_photo(args: tuple[Path, int]) -> int:
    path, index = args
    rng = random.Random(index)
    width, height = rng.choice(SIZES)
    # Small photos a little less compressed, so that every body is 0.5 MB or more as the mix has it.
    data = photo_like(width, height, seed=index, orientation=6 if index % 5 == 0 else 1, gps=index % 3 == 0,
                      quality=93 if width <= 2048 else 90)
    path.write_bytes(data)
    return len(data)


def photo_cache(workdir: Path, unique: int) -> list[bytes]:
    """The --unique photos, generated once (two processes) into <workdir>/photos/."""
    folder = workdir / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [(folder / f"photo{i:05d}.jpg", i) for i in range(unique) if not (folder / f"photo{i:05d}.jpg").exists()]
    if missing:
        print(f"generating {len(missing)} photos into {folder} (once) ...", flush=True)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_make_photo, missing, chunksize=4))
    return [(folder / f"photo{i:05d}.jpg").read_bytes() for i in range(unique)]


class PhotoServer(BodyServer):
    """``/media/<n>.jpg`` → photo n % len(photos), a COM segment naming n after its SOI marker (each body unique)."""

    def __init__(self, photos: list[bytes], latency: float) -> None:
        super().__init__(b"", latency)
        self.photos = photos

    async def _media(self, request: web.Request) -> web.StreamResponse:
        self.hit_times.append((time.monotonic(), request.path))
        if self.latency:
            await asyncio.sleep(self.latency)
        n = int(request.match_info["name"].split(".")[0])
        photo = self.photos[n % len(self.photos)]
        comment = f"beam-gbif bench image {n}".encode()
        segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = len(photo) + len(segment)
        await response.prepare(request)
        await response.write(photo[:2] + segment)
        view = memoryview(photo)[2:]
        for start in range(0, len(view), 1 << 20):
            await response.write(view[start:start + (1 << 20)])
        await response.write_eof()
        self.done_times.append(time.monotonic())
        return response


def thread_scaling(photos: list[bytes], image_size: int, count: int = 40) -> str:
    """prepare() alone on ``count`` photos with 1 thread and with one per CPU: does the work scale past the GIL?"""
    settings = ImageSettings(image_size=image_size, resize_mode="keep_ratio")
    rates = []
    for threads in (1, os.cpu_count() or 2):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda body: prepare(body, "jpg", "image/jpeg", settings), photos[:count]))
        rates.append((threads, count / (time.perf_counter() - started)))
    # On a shared machine the ratio says little: the load average is printed beside it.
    load = os.getloadavg()[0]
    return "; ".join(f"{threads} thread(s) {rate:.0f} images/s" for threads, rate in rates) + \
        f" (x{rates[-1][1] / rates[0][1]:.2f}; load average {load:.1f} on {os.cpu_count()} CPUs)"


def stored(out: Path) -> tuple[int, int]:
    """(files, bytes) of the images written under ``out``."""
    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".jpg", ".jpeg")]
    return len(files), sum(p.stat().st_size for p in files)


def commands(args: argparse.Namespace, urls_file: Path, img2dataset: Path | None) -> dict[str, list[str] | None]:
    beam = [sys.executable, "-m", BEAM_MODULE, "--source", "urls", "--input", str(urls_file), "--allow_private_hosts", "true",
            "--max_concurrency", str(args.concurrency), "--per_host_concurrency", str(args.concurrency)]
    size = ["--image_size", str(args.image_size), "--resize_mode", "keep_ratio"]
    i2d = None if img2dataset is None else [
        str(img2dataset.parent / "img2dataset"), "--url_list", str(urls_file), "--input_format", "txt", "--output_format", "files",
        "--processes_count", "2", "--thread_count", "64", "--timeout", "30", "--retries", "0", "--enable_wandb", "False",
        "--number_sample_per_shard", "10000", *size]
    return {"beam-gbif resized": [*beam, *size], "img2dataset 1.47 resized": i2d, "beam-gbif originals": beam}


def run_row(name: str, cmd: list[str], args: argparse.Namespace, server: PhotoServer, env: dict[str, str], workdir: Path) -> str:
    out = workdir / "out" / name.replace(" ", "-")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    flag = "--output_folder" if "img2dataset" in name else "--output"
    log = workdir / f"{name.replace(' ', '-')}.log"
    print(f"running {name} ...", flush=True)
    server.reset_hits()
    m: Measured = run_measured([*cmd, flag, str(out)], env, args.timeout, log, cwd=PROJECT if "beam" in name else workdir)
    files, size = stored(out)
    shutil.rmtree(out, ignore_errors=True)
    note = "" if m.code == 0 else f" exit {m.code}, see {log}"
    return (f"{name:26} {files / m.seconds:8.1f} {m.seconds:7.1f} {m.cpu_seconds:7.1f} {files:6d} {size / 1e6:10.1f} "
            f"{m.peak_rss_mb:9.0f} {m.tree_rss_mb:8.0f}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--unique", type=int, default=250, help="distinct photos generated (cached); URL n serves photo n %% unique")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=128, help="beam-gbif's --max_concurrency and --per_host_concurrency")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beam-gbif-bench-images"))
    parser.add_argument("--skip", default="", help="comma-separated: beam-gbif resized, img2dataset 1.47 resized, beam-gbif originals")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    photos = photo_cache(workdir, args.unique)
    scaling = thread_scaling(photos, args.image_size)
    img2dataset, why = ensure_venv(workdir, "img2dataset", "img2dataset==1.47.0")
    env = {**os.environ, **NO_NETWORK_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    server = PhotoServer(photos, args.latency).start()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    lines = []
    try:
        urls_file = workdir / f"urls-{args.images}.txt"
        urls_file.write_text("".join(f"{server.base_url}/media/{n:06d}.jpg\n" for n in range(args.images)))
        for name, cmd in commands(args, urls_file, img2dataset).items():
            if name in skip:
                continue
            lines.append(run_row(name, cmd, args, server, env, workdir) if cmd else f"{name:26} -  {why}")
    finally:
        server.stop()
    sizes = [len(p) for p in photos]
    print(f"\n== {args.images} JPEGs ({args.unique} distinct, {min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f} MB, mean "
          f"{sum(sizes) / len(sizes) / 1e6:.2f} MB), {args.latency * 1000:.0f} ms latency, --image_size {args.image_size} keep_ratio, "
          f"{os.cpu_count()} CPUs ==")
    print(f"{'tool':26} {'files/s':>8} {'wall s':>7} {'CPU s':>7} {'files':>6} {'stored MB':>10} {'peak RSS':>9} {'tree MB':>8}")
    print("\n".join(lines))
    print(f"decode+resize+encode alone (io/images.prepare, draft on): {scaling}")
    print("whole-process figures: wall from fork to exit, CPU of the whole process tree, peak RSS of the largest process (MB)")


if __name__ == "__main__":
    main()
