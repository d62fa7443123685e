"""Download benchmark: beam-gbif's DownloadMedia against gbif-dl 0.1.1, img2dataset and raw aiohttp clients.

    python bench/download.py                      # 20,000 URLs, 50 ms latency, ~12 KB JPEGs
    python bench/download.py --urls 2000 --skip img2dataset

Everything runs against one local media server process on 127.0.0.1 (``beam_gbif.testing.media_server``).
Each tool runs as its own subprocess on the same URL list into a fresh folder; the figure is the whole
process's wall time (interpreter and pipeline start included) and its peak RSS (``wait4``). gbif-dl and
img2dataset are installed from PyPI into separate venvs under the work folder on first use; if that
fails the row says why and the rest carries on. All URLs sit on one host, so beam-gbif's per-host
limit is lifted to its total concurrency (the peers have no per-host limit at all).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV, free_port  # noqa: E402

NO_NETWORK_ENV = {
    **NO_METADATA_ENV,
    "NO_ALBUMENTATIONS_UPDATE": "1",  # img2dataset imports albumentations, which otherwise asks PyPI for updates
    "WANDB_MODE": "disabled", "HTTP_PROXY": "", "HTTPS_PROXY": "", "http_proxy": "", "https_proxy": "", "NO_PROXY": "*",
}

RAW_CLIENT = textwrap.dedent("""
    import asyncio, os, sys, aiohttp, uuid
    urls_file, out, concurrency, write = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "write"
    urls = open(urls_file).read().split()
    async def main():
        queue = iter(urls)
        ok = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def worker():
                nonlocal ok
                for url in queue:
                    async with session.get(url) as response:
                        body = await response.read()
                    if write:
                        name = url.rsplit("/", 1)[1]
                        temp = os.path.join(out, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
                        with open(temp, "wb") as handle:
                            handle.write(body)
                        os.replace(temp, os.path.join(out, name))
                    ok += 1
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        print("ok", ok)
    asyncio.run(main())
""")

BEAM_GBIF = textwrap.dedent("""
    import sys
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from beam_gbif.download.fetch import DownloadMedia
    from beam_gbif.records import MediaRecord
    urls_file, out, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    session_per_bundle, fsync = sys.argv[4] == "1", sys.argv[5] == "1"
    records = [MediaRecord(url=u, label="bench", occurrence_key=i) for i, u in enumerate(open(urls_file).read().split())]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        (pipeline | beam.Create(records)
         | DownloadMedia(out, allow_private_hosts=True, max_concurrency=concurrency, per_host_concurrency=concurrency,
                         session_per_bundle=session_per_bundle, fsync=fsync, max_retries=0, progress_interval=5))
""")

GBIF_DL = textwrap.dedent("""
    import sys
    from gbif_dl.stores.dl_async import download
    urls_file, out = sys.argv[1], sys.argv[2]
    items = [{"url": u, "basename": None, "label": "bench"} for u in open(urls_file).read().split()]
    print(download(items, root=out, loglevel="CRITICAL"))
""")


def run_measured(cmd: list[str], env: dict[str, str], timeout: float, log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one subprocess."""
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, usage.ru_maxrss / 1024, process.returncode


def ensure_venv(workdir: Path, name: str, requirement: str) -> tuple[Path | None, str]:
    venv = workdir / f"{name}-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python, ""
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True, capture_output=True, timeout=1200,
                       env={**os.environ, **NO_NETWORK_ENV})
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, f"install of {requirement} failed: {exc}; {detail.decode(errors='replace')[-300:]}"
    marker.write_text(requirement)
    return python, ""


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".jpg", ".jpeg"))


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the media server adds to each request")
    parser.add_argument("--image_bytes", type=int, default=12_000)
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight for beam-gbif and the raw clients")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beam-gbif-bench-download"))
    parser.add_argument("--skip", default="",
                        help="comma-separated rows to skip: raw,raw-write,beam-gbif,beam-gbif-variants,gbif-dl,img2dataset")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per tool")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **NO_NETWORK_ENV, "PYTHONPATH": str(PROJECT)}

    port = free_port()
    server_log = open(workdir / "media-server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "beam_gbif.testing.media_server", "--port", str(port), "--latency", str(args.latency),
                               "--image_bytes", str(args.image_bytes)], env=env, stdout=server_log, stderr=subprocess.STDOUT)
    rows: list[tuple[str, float, float, int, str]] = []
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/media/warmup.jpg")
        urls_file = workdir / "urls.txt"
        urls_file.write_text("".join(f"{base}/media/bench{i:06d}.jpg\n" for i in range(args.urls)))

        def fresh(name: str) -> Path:
            folder = workdir / "out" / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            return folder

        def measure(name: str, cmd_for: Callable[[Path], list[str]], python: str = sys.executable, note: str = "") -> None:
            out = fresh(name)
            cmd = [python, *cmd_for(out)]
            print(f"running {name} ...", flush=True)
            log = workdir / (re.sub(r"[^A-Za-z0-9.-]+", "_", name) + ".log")
            seconds, rss, code = run_measured(cmd, env, args.timeout, log)
            files = count_files(out)
            reported = re.findall(r"^ok (\d+)$", log.read_text(errors="replace"), re.M)
            if not files and reported:  # the no-write client counts bodies instead of files
                files = int(reported[-1])
            if code != 0:
                note = (note + f"; exit {code}, see {log}").lstrip("; ")
            rows.append((name, seconds, rss, files, note))
            print(f"  {name}: {seconds:.1f} s, {files} files, {files / seconds:.0f} files/s, peak RSS {rss:.0f} MB {note}", flush=True)

        def measure_installed(name: str, venv: str, requirement: str, cmd_for: Callable[[Path, Path], list[str]], note: str) -> None:
            """``measure`` with the tool's own venv (``cmd_for(python, out)``); a failed install is a row saying why."""
            python, why = ensure_venv(workdir, venv, requirement)
            if python is None:
                rows.append((name, 0, 0, 0, why))
                print(f"  {name}:", why)
                return
            measure(name, lambda out: cmd_for(python, out), python=str(python), note=note)

        c = str(args.concurrency)
        if "raw" not in skip:
            measure("raw aiohttp (no writes)", lambda out: ["-c", RAW_CLIENT, str(urls_file), str(out), c, "nowrite"],
                    note=f"{c} in flight; files not written")
        if "raw-write" not in skip:
            measure("raw aiohttp + temp/rename", lambda out: ["-c", RAW_CLIENT, str(urls_file), str(out), c, "write"],
                    note=f"{c} in flight")
        if "beam-gbif" not in skip:
            measure("beam-gbif", lambda out: ["-c", BEAM_GBIF, str(urls_file), str(out), c, "0", "1"],
                    note=f"FnApiRunner; defaults (fsync, session per DoFn) but max/per-host concurrency {c}")
        if "beam-gbif-variants" not in skip:
            measure("beam-gbif, no fsync", lambda out: ["-c", BEAM_GBIF, str(urls_file), str(out), c, "0", "0"], note="fsync=False")
            measure("beam-gbif, session/bundle", lambda out: ["-c", BEAM_GBIF, str(urls_file), str(out), c, "1", "1"],
                    note="aiohttp session per bundle")
        if "gbif-dl" not in skip:
            measure_installed("gbif-dl 0.1.1", "gbifdl", "gbif-dl==0.1.1", lambda python, out: ["-c", GBIF_DL, str(urls_file), str(out)],
                              note="dl_async.download defaults (128 connections)")
        if "img2dataset" not in skip:
            measure_installed("img2dataset", "img2dataset", "img2dataset",
                              lambda python, out: [str(python.parent / "img2dataset"), "--url_list", str(urls_file),
                                                   "--input_format", "txt", "--output_format", "files", "--output_folder", str(out),
                                                   "--resize_mode", "no", "--processes_count", "2", "--thread_count", c, "--timeout", "10",
                                                   "--retries", "0", "--enable_wandb", "False", "--number_sample_per_shard", "10000"],
                              note=f"files, no resize, 2 processes × {c} threads")
    finally:
        server.terminate()
        server.wait(10)
        server_log.close()

    print()
    print(f"{args.urls} URLs, {args.latency * 1000:.0f} ms latency, {args.image_bytes} B JPEGs, one local host; {os.cpu_count()} CPUs")
    by_name = {name: files / seconds for name, seconds, _, files, _ in rows if seconds and files}
    beam_rate = by_name.get("beam-gbif")
    print(f"{'tool':30} {'wall s':>8} {'files':>7} {'files/s':>8} {'peak RSS MB':>11} {'beam-gbif ×':>11}  settings / notes")
    for name, seconds, rss, files, note in rows:
        rate = files / seconds if seconds else 0.0
        ratio = f"{beam_rate / rate:.2f}" if beam_rate and rate else "-"
        print(f"{name:30} {seconds:8.1f} {files:7d} {rate:8.0f} {rss:11.0f} {ratio:>11}  {note}")


if __name__ == "__main__":
    main()
