"""Download benchmark: the beam-gbif CLI, end to end, against gbif-dl 0.1.1, img2dataset and raw aiohttp clients.

    python bench/download.py                                  # case "small": 20,000 URLs x ~12 KB JPEGs, 50 ms latency, 3 rounds
    python bench/download.py --urls 100000                    # the amortised case
    python bench/download.py --case big                       # memory ceiling: 2,000 URLs x 8 MiB bodies
    python bench/download.py --case all                       # both, printed one after the other
    python bench/download.py --urls 2000 --rounds 1 --skip gbif-dl,img2dataset --case all --big_urls 200   # a quick check

Case "small" (issue 10, section 6: "measure the whole job a user runs"). Every tool runs as its own
subprocess on the same URL list (one URL per line, all on one local host) into a fresh folder:

  * raw aiohttp (no writes): one ClientSession, --concurrency requests in flight, bodies read and dropped;
  * raw aiohttp + temp/rename: the same, each body written to a hidden temp file and renamed (no fsync);
  * beam-gbif: the CLI a user runs, ``python -m pipelines.gbif_media --source urls --input URLS --output OUT
    --max_concurrency 256 --per_host_concurrency 256 --allow_private_hosts true`` (FnApiRunner, every default
    of the job: fsync per file, retries, manifest, stats.json);
  * gbif-dl 0.1.1 (``dl_async.download`` defaults) and img2dataset (files, no resize), each in its own venv
    under --workdir, installed from PyPI on first use (a failed install is a row saying why).

Rounds are interleaved (round 1 of every tool, then round 2, ...), each after an ``os.sync()`` so that the previous
run's writeback does not land on it; the table gives the median over rounds.
What each figure measures:

  * files/s and wall s: WHOLE-PROCESS figures, from fork to exit: interpreter start, imports, pipeline
    construction, reading the URL list, downloading, writing the manifest and stats. This is what a user
    waits for, and it is what the issue's targets (beam-gbif >= 0.7 x raw-with-writes at 20k, >= 0.85 x at
    100k, >= 3 x gbif-dl) are checked against;
  * fetch s: a COMPONENT figure: first request to last response at the media server, i.e. the download phase
    alone (start-up and the manifest excluded). The "fetch" ratio compares tools on that phase only;
  * peak RSS: the largest resident set of any one process of the tool (ru_maxrss of the tool and of every
    descendant it waited for, read through GNU time so that this script's own memory is not counted), max over
    rounds; tree RSS: the sum over the tool's whole process tree, sampled every 0.2 s (img2dataset runs several
    processes at once), max over rounds.

Case "big" (issue 10, section 1: the memory ceiling): --big_urls (2,000) bodies of --big_bytes (8 MiB) on one
host, beam-gbif CLI at --max_concurrency 256 --per_host_concurrency 256, plus --max_buffer_bytes (1 GiB) when
the CLI's --help lists that option (else the row says "(--max_buffer_bytes not supported by this build)"). It
reports the whole job's peak RSS (largest of the ru_maxrss figure and the sampled tree sum) against the budget
+ 400 MiB. The raw aiohttp + temp/rename client runs beside it as a
reference (it holds every body in flight: about concurrency x 8 MiB). The output folder is deleted after every
run (2,000 x 8 MiB = 16 GiB of writes). The 8 MiB bodies come from a small server in this script that sends one
prebuilt JPEG (``jpeg_bytes``) in 1 MiB writes: the project's media server builds each body per request
(~36 ms of CPU for 8 MiB), which would compete with the tool on a 2-core machine.

Both servers run in this process on 127.0.0.1 (nothing else is contacted). --beam_wrapper prefixes the beam-gbif
command (e.g. ``--beam_wrapper "py-spy record --subprocesses --format speedscope -o /tmp/beam.json --"`` to profile
it under exactly the benchmark's conditions; RSS figures then include the wrapper).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from beam_gbif.testing.media_server import MediaServer, jpeg_bytes  # noqa: E402
from beam_gbif.testing.serving import AppThread  # noqa: E402

MIB = 1024 * 1024
NO_NETWORK_ENV = {
    "NO_GCE_CHECK": "True", "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9",  # no GCP metadata lookups
    "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
    "NO_ALBUMENTATIONS_UPDATE": "1",  # img2dataset imports albumentations, which otherwise asks PyPI for updates
    "WANDB_MODE": "disabled", "HTTP_PROXY": "", "HTTPS_PROXY": "", "http_proxy": "", "https_proxy": "", "NO_PROXY": "*",
}
BEAM_MODULE = "pipelines.gbif_media"
RAW, RAW_WRITE, BEAM, GBIF_DL_ROW, IMG2DATASET = "raw", "raw-write", "beam-gbif", "gbif-dl", "img2dataset"

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
                        name = url.rsplit("/", 1)[1].split("?")[0]
                        temp = os.path.join(out, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
                        with open(temp, "wb") as handle:
                            handle.write(body)
                        os.replace(temp, os.path.join(out, name))
                    ok += 1
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        print("ok", ok)
    asyncio.run(main())
""")

GBIF_DL = textwrap.dedent("""
    import sys
    from gbif_dl.stores.dl_async import download
    urls_file, out = sys.argv[1], sys.argv[2]
    items = [{"url": u, "basename": None, "label": "bench"} for u in open(urls_file).read().split()]
    print(download(items, root=out, loglevel="CRITICAL"))
""")


# -- measuring one process ---------------------------------------------------------------------------------------------
def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        children[int(stat.rsplit(b")", 1)[1].split()[1])].append(int(entry.name))
    return children


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, now."""
    children = _children_by_parent()
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(children.get(pid, ()))
    return total


@dataclasses.dataclass
class Measured:
    seconds: float
    peak_rss_mb: float  # ru_maxrss: the largest single process of the tree
    tree_rss_mb: float  # sampled sum over the process tree
    code: int
    cpu_seconds: float = 0.0  # user + system time of the tool and every descendant it waited for (wait4's rusage)


TIME = shutil.which("time", path="/usr/bin:/bin")  # GNU time: a tiny C parent, so its child's ru_maxrss is the tool's own


def run_measured(cmd: list[str], env: dict[str, str], timeout: float, log: Path, cwd: Path | None = None) -> Measured:
    """Wall time, peak RSS (ru_maxrss, waited-for children included) and the peak of the sampled tree RSS of one subprocess.

    A child forked from this process starts with this process's resident set counted in its ru_maxrss (Linux carries
    the parent's high-water mark over fork and exec), so the tool runs under GNU time (``%M``) where it exists, and
    the plain wait4 figure is only the fallback. The tool runs in its own session so a timeout kills all of it.
    """
    started = time.monotonic()
    tree_peak = 0
    maxrss_file = log.with_suffix(".maxrss")
    maxrss_file.unlink(missing_ok=True)
    wrapped = [TIME, "-f", "%M", "-o", str(maxrss_file), *cmd] if TIME else cmd
    with open(log, "wb") as out:
        out.write(("$ " + shlex.join(cmd) + "\n").encode())
        out.flush()
        process = subprocess.Popen(wrapped, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        deadline = started + timeout
        next_sample = started
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(process.pid, 0)
                break
            if now >= next_sample:
                tree_peak = max(tree_peak, tree_rss_bytes(process.pid))
                next_sample = now + 0.2
            time.sleep(0.02)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    peak_kib = usage.ru_maxrss
    try:
        peak_kib = int(maxrss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    return Measured(seconds, peak_kib / 1024, tree_peak / MIB, process.returncode, usage.ru_utime + usage.ru_stime)


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


# -- servers -------------------------------------------------------------------------------------------------------------
class TimedMediaServer(MediaServer):
    """The project's media server, also noting when each response is sent (``done_times``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done_times: list[float] = []

    def make_app(self) -> web.Application:
        app = super().make_app()

        async def sent(request: web.Request, response: web.StreamResponse) -> None:
            self.done_times.append(time.monotonic())  # headers out; a ~12 KB body follows in the same write

        app.on_response_prepare.append(sent)
        return app

    def reset_hits(self) -> None:
        super().reset_hits()
        self.done_times.clear()


class BodyServer:
    """``/media/<name>`` → one prebuilt body (after ``latency``), written 1 MiB at a time so the server never buffers
    whole bodies for slow readers. Request times are kept like MediaServer's ``hit_times``, end times in ``done_times``."""

    def __init__(self, body: bytes, latency: float) -> None:
        self.body = body
        self.latency = latency
        self.hit_times: list[tuple[float, str]] = []
        self.done_times: list[float] = []
        self._thread = AppThread(self._make_app, name="bench-body-server", runner_options={"shutdown_timeout": 0.5},
                                 site_options={"backlog": 2048})
        self.port = 0

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/media/{name}", self._media)
        return app

    async def _media(self, request: web.Request) -> web.StreamResponse:
        self.hit_times.append((time.monotonic(), request.path))
        if self.latency:
            await asyncio.sleep(self.latency)
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = len(self.body)
        await response.prepare(request)
        view = memoryview(self.body)
        for start in range(0, len(view), MIB):
            await response.write(view[start:start + MIB])
        await response.write_eof()
        self.done_times.append(time.monotonic())
        return response

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_hits(self) -> None:
        self.hit_times.clear()
        self.done_times.clear()

    def start(self) -> BodyServer:
        self.port = self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.stop()


def fetch_window(server: TimedMediaServer | BodyServer) -> float:
    """Seconds from the first request the server saw to the last response it sent (0 if none)."""
    starts = [t for t, _ in list(server.hit_times)]
    ends = list(server.done_times)
    return max(ends) - min(starts) if starts and ends else 0.0


# -- tools and rounds ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Tool:
    key: str  # the name --skip uses
    name: str
    cmd_for: Callable[[Path], list[str]]
    note: str = ""
    cwd: Path | None = None


@dataclasses.dataclass
class Round:
    measured: Measured
    files: int
    window: float
    note: str = ""
    job: str = ""  # beam-gbif's own "N records in S s ..., F failed" figures (stats.json seconds: after start-up)


@dataclasses.dataclass
class Row:
    tool: Tool
    rounds: list[Round] = dataclasses.field(default_factory=list)
    error: str = ""

    @property
    def ok_rounds(self) -> list[Round]:
        return [r for r in self.rounds if r.files and r.measured.seconds]

    @property
    def rate(self) -> float:
        ok = self.ok_rounds
        return statistics.median(r.files / r.measured.seconds for r in ok) if ok else 0.0

    @property
    def window_rate(self) -> float:
        ok = [r for r in self.ok_rounds if r.window]
        return statistics.median(r.files / r.window for r in ok) if ok else 0.0

    def median(self, attribute: Callable[[Round], float]) -> float:
        return statistics.median(attribute(r) for r in self.rounds) if self.rounds else 0.0

    def peak(self, attribute: Callable[[Round], float]) -> float:
        return max((attribute(r) for r in self.rounds), default=0.0)


def beam_cli_help(env: dict[str, str]) -> tuple[str, str]:
    """(the CLI's --help text, "" or why it could not be read); a failure is noted, the runs are still tried."""
    try:
        done = subprocess.run([sys.executable, "-m", BEAM_MODULE, "--help"], env=env, cwd=PROJECT, capture_output=True, text=True,
                              timeout=300)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return "", f"{BEAM_MODULE} --help failed: {exc}"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        return done.stdout, f"{BEAM_MODULE} --help exited {done.returncode}: {lines[-1] if lines else ''}"
    return done.stdout, ""


def beam_tool(urls_file: Path, concurrency: int, extra: list[str], wrapper: list[str], note: str) -> Tool:
    def cmd_for(out: Path) -> list[str]:
        return [*wrapper, sys.executable, "-m", BEAM_MODULE, "--source", "urls", "--input", str(urls_file), "--output", str(out),
                "--max_concurrency", str(concurrency), "--per_host_concurrency", str(concurrency), "--allow_private_hosts", "true", *extra]

    return Tool(BEAM, "beam-gbif (CLI)", cmd_for, note, cwd=PROJECT)


def raw_tool(urls_file: Path, concurrency: int, write: bool) -> Tool:
    mode = "write" if write else "nowrite"

    def cmd_for(out: Path) -> list[str]:
        return [sys.executable, "-c", RAW_CLIENT, str(urls_file), str(out), str(concurrency), mode]

    if write:
        return Tool(RAW_WRITE, "raw aiohttp + temp/rename", cmd_for, f"{concurrency} in flight, no fsync")
    return Tool(RAW, "raw aiohttp (no writes)", cmd_for, f"{concurrency} in flight; files not written")


def run_rounds(rows: list[Row], rounds: int, server: TimedMediaServer | BodyServer, env: dict[str, str], workdir: Path, timeout: float,
               case: str) -> None:
    """Runs every runnable row once per round, rounds interleaved; each output folder is deleted once counted."""
    for index in range(rounds):
        for row in rows:
            if row.error:
                continue
            tool = row.tool
            out = workdir / "out" / case / tool.key
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            os.sync()  # the previous run's writeback and deletions do not land on this one
            log = workdir / f"{case}-{re.sub(r'[^A-Za-z0-9.-]+', '_', tool.key)}-round{index + 1}.log"
            print(f"[{case}] round {index + 1}/{rounds}: {tool.name} ...", flush=True)
            server.reset_hits()
            try:
                measured = run_measured(tool.cmd_for(out), env, timeout, log, cwd=tool.cwd or workdir)
                window = fetch_window(server)
                files = count_files(out)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            text = log.read_text(errors="replace")
            reported = re.findall(r"^ok (\d+)$", text, re.M)
            if not files and reported:  # the no-write client counts bodies instead of files
                files = int(reported[-1])
            note, job = "", ""
            summary = re.search(r"^beam-gbif: (\d+) records in ([\d.]+) s: (\d+) files in the dataset, (\d+) failed", text, re.M)
            if summary:
                job = f"{float(summary[2]):.1f} s/{summary[4]} failed"
                note = f"job {job}"
            if measured.code != 0:
                note = (note + f"; exit {measured.code}, see {log}").lstrip("; ")
            row.rounds.append(Round(measured, files, window, "" if measured.code == 0 else note, job))
            m = measured
            print(f"  {m.seconds:.1f} s, {files} files, {files / m.seconds:.0f} files/s, fetch {window:.1f} s, "
                  f"peak RSS {m.peak_rss_mb:.0f} MB, tree {m.tree_rss_mb:.0f} MB {note}", flush=True)


def print_table(rows: list[Row]) -> None:
    print(f"{'tool':28} {'files/s':>8} {'wall s':>7} {'fetch s':>7} {'fetch/s':>8} {'files':>7} {'peak RSS MB':>11} {'tree MB':>8}"
          "  rounds (wall s) / settings / notes")
    for row in rows:
        if row.error:
            print(f"{row.tool.name:28} {'-':>8} {'-':>7} {'-':>7} {'-':>8} {'-':>7} {'-':>11} {'-':>8}  {row.error}")
            continue
        walls = "/".join(f"{r.measured.seconds:.1f}" for r in row.rounds)
        jobs = " ".join(r.job for r in row.rounds if r.job)
        notes = "; ".join(dict.fromkeys(n for n in [row.tool.note, f"job [{jobs}]" if jobs else "", *(r.note for r in row.rounds)] if n))
        print(f"{row.tool.name:28} {row.rate:8.0f} {row.median(lambda r: r.measured.seconds):7.1f} {row.median(lambda r: r.window):7.1f} "
              f"{row.window_rate:8.0f} {int(row.median(lambda r: r.files)):7d} {row.peak(lambda r: r.measured.peak_rss_mb):11.0f} "
              f"{row.peak(lambda r: r.measured.tree_rss_mb):8.0f}  [{walls}] {notes}")


def ratio_line(label: str, beam: Row | None, other: Row | None, target: str) -> str:
    if beam is None or other is None or not beam.rate or not other.rate:
        return f"{label}: - (a row is missing or failed)"
    whole = beam.rate / other.rate
    fetch = f"{beam.window_rate / other.window_rate:.2f}" if beam.window_rate and other.window_rate else "-"
    return f"{label}: {whole:.2f} whole-process (fetch phase {fetch}); {target}"


# -- the cases -----------------------------------------------------------------------------------------------------------
def small_case(args: argparse.Namespace, skip: set[str], env: dict[str, str], workdir: Path, wrapper: list[str]) -> None:
    _help, help_error = beam_cli_help(env)
    server = TimedMediaServer(latency=args.latency, image_size=args.image_bytes).start()
    try:
        urls_file = workdir / f"urls-small-{args.urls}.txt"
        urls_file.write_text("".join(f"{server.base_url}/media/bench{i:06d}.jpg\n" for i in range(args.urls)))
        c = args.concurrency
        rows = [Row(raw_tool(urls_file, c, write=False)), Row(raw_tool(urls_file, c, write=True)),
                Row(beam_tool(urls_file, c, [], wrapper, "; ".join(filter(None, [
                    f"CLI defaults (fsync, retries, manifest) but max/per-host concurrency {c}", help_error]))))]
        installs = [(GBIF_DL_ROW, "gbif-dl 0.1.1", "gbifdl", "gbif-dl==0.1.1", "dl_async.download defaults (128 connections)",
                     lambda python, out: [str(python), "-c", GBIF_DL, str(urls_file), str(out)]),
                    (IMG2DATASET, "img2dataset", "img2dataset", "img2dataset", f"files, no resize, 2 processes x {c} threads",
                     lambda python, out: [str(python.parent / "img2dataset"), "--url_list", str(urls_file), "--input_format", "txt",
                                          "--output_format", "files", "--output_folder", str(out), "--resize_mode", "no",
                                          "--processes_count", "2", "--thread_count", str(c), "--timeout", "10", "--retries", "0",
                                          "--enable_wandb", "False", "--number_sample_per_shard", "10000"])]
        for key, name, venv, requirement, note, command in installs:
            if key in skip:
                continue
            python, why = ensure_venv(workdir, venv, requirement)
            rows.append(Row(Tool(key, name, (lambda out, p=python, cmd=command: cmd(p, out)), note), error=why))
        rows = [row for row in rows if row.tool.key not in skip]
        run_rounds(rows, args.rounds, server, env, workdir, args.timeout, "small")
    finally:
        server.stop()

    by_key = {row.tool.key: row for row in rows}
    print()
    print(f"== small: {args.urls} URLs x {args.image_bytes} B JPEGs, {args.latency * 1000:.0f} ms latency, one local host, "
          f"{os.cpu_count()} CPUs; median of {args.rounds} round(s), rounds interleaved ==")
    print_table(rows)
    beam = by_key.get(BEAM)
    print(ratio_line("beam-gbif / raw+writes", beam, by_key.get(RAW_WRITE), "target >= 0.70 at 20k, >= 0.85 at 100k"))
    print(ratio_line("beam-gbif / gbif-dl   ", beam, by_key.get(GBIF_DL_ROW), "target >= 3"))
    print("files/s, wall s: whole process (start-up, job, manifest); fetch s, fetch/s: first request to last response at the server "
          "(component); peak RSS: largest process (ru_maxrss), tree: sampled sum of all processes; RSS max over rounds")


def big_case(args: argparse.Namespace, skip: set[str], env: dict[str, str], workdir: Path, wrapper: list[str]) -> None:
    help_text, help_error = beam_cli_help(env)
    budget_supported = "--max_buffer_bytes" in help_text
    extra = ["--max_buffer_bytes", str(args.max_buffer_bytes)] if budget_supported else []
    budget_note = f"--max_buffer_bytes {args.max_buffer_bytes}" if budget_supported else "(--max_buffer_bytes not supported by this build)"
    if help_error:  # the run is still tried: a CLI that is being restructured may be back by then
        budget_note = f"(--max_buffer_bytes not passed: {help_error})"
    print(f"[big] building one {args.big_bytes} B JPEG body ...", flush=True)
    server = BodyServer(jpeg_bytes("big", args.big_bytes), args.latency).start()
    try:
        urls_file = workdir / f"urls-big-{args.big_urls}.txt"
        urls_file.write_text("".join(f"{server.base_url}/media/big{i:06d}.jpg\n" for i in range(args.big_urls)))
        c = args.big_concurrency
        rows = [Row(beam_tool(urls_file, c, extra, wrapper, f"max/per-host concurrency {c}, {budget_note}")),
                Row(raw_tool(urls_file, c, write=True))]
        rows = [row for row in rows if row.tool.key not in skip]
        run_rounds(rows, args.big_rounds, server, env, workdir, args.timeout, "big")
    finally:
        server.stop()

    limit_mb = args.max_buffer_bytes / MIB + 400
    print()
    print(f"== big (memory ceiling): {args.big_urls} URLs x {args.big_bytes / MIB:.0f} MiB, {args.latency * 1000:.0f} ms latency, "
          f"one local host; {args.big_rounds} round(s); budget {args.max_buffer_bytes / MIB:.0f} MiB + 400 MiB = {limit_mb:.0f} MiB ==")
    print_table(rows)
    for row in rows:
        if row.error or not row.rounds:
            continue
        peak = max(row.peak(lambda r: r.measured.peak_rss_mb), row.peak(lambda r: r.measured.tree_rss_mb))
        mb_s = row.rate * args.big_bytes / MIB
        verdict = "UNDER" if peak <= limit_mb else "OVER"
        extra_note = f" {budget_note}" if row.tool.key == BEAM else " (reference: holds every body in flight)"
        print(f"{row.tool.name}: whole-process peak RSS {peak:.0f} MiB: {verdict} budget + 400 MiB ({limit_mb:.0f} MiB); "
              f"{mb_s:.0f} MiB/s{extra_note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["small", "big", "all"], default="small", help="12 KB throughput, 8 MiB memory, or both")
    parser.add_argument("--urls", type=int, default=20_000, help="URLs of the small case (100000 for the amortised case)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the small case; the table gives medians")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the media server adds to each request")
    parser.add_argument("--image_bytes", type=int, default=12_000, help="body size of the small case")
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight for beam-gbif and the raw clients (small case)")
    parser.add_argument("--big_urls", type=int, default=2_000)
    parser.add_argument("--big_bytes", type=int, default=8 * MIB)
    parser.add_argument("--big_concurrency", type=int, default=256, help="--max_concurrency and --per_host_concurrency of the big case")
    parser.add_argument("--big_rounds", type=int, default=1)
    parser.add_argument("--max_buffer_bytes", type=int, default=1 << 30,
                        help="passed to the CLI in the big case if its --help lists it; the RSS budget either way")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beam-gbif-bench-download"))
    parser.add_argument("--skip", default="", help=f"comma-separated rows to skip: {RAW},{RAW_WRITE},{BEAM},{GBIF_DL_ROW},{IMG2DATASET}")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per tool run")
    parser.add_argument("--beam_wrapper", default="", help="command prefixed to the beam-gbif CLI (e.g. a profiler ending in --)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **NO_NETWORK_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    wrapper = shlex.split(args.beam_wrapper)
    if args.case in ("small", "all"):
        small_case(args, skip, env, workdir, wrapper)
    if args.case in ("big", "all"):
        if args.case == "all":
            print()
        big_case(args, skip, env, workdir, wrapper)


if __name__ == "__main__":
    main()
