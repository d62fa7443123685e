"""DownloadMedia: every selected record → one file under the dataset root and one result record.

Records are grouped by (host, shard) so per-host limits hold across workers (see io/hosts.py). The
DoFn owns an asyncio event loop (created in ``setup``) that runs in the DoFn's thread: ``process``
queues one task per record, ``finish_bundle`` runs them all and emits the results as
WindowedValues (Beam 2.77's AsyncWrapper lost outputs on the batch runners; this does not). File
writes and hashing run in a thread pool so the loop never stalls on the disk or on GCS.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.utils.windowed_value import WindowedValue

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.fetch import DownloadSettings, FetchEngine, failed
from beam_gbif.io.hosts import host_shard_key, host_shards
from beam_gbif.io.safety import AddressPolicy
from beam_gbif.io.store import store_for
from beam_gbif.transforms.coders import MediaRecordCoder
from beam_gbif.transforms.download_progress import DownloadProgress
from beam_gbif.transforms.spill import GroupByKeyOnDisk

__all__ = ["DownloadMedia", "DownloadSettings"]


class _DownloadFn(beam.DoFn):
    """(host-shard key, records) → one result record per input.

    The event loop is created in ``setup`` and runs in the DoFn's own thread, only inside
    ``process`` and ``finish_bundle``: no thread hand-offs per record, no GIL contention between a
    loop thread and Beam's thread, and counters are incremented in the DoFn's thread. ``process``
    queues one task per record and lets them start; the loop runs to completion in
    ``finish_bundle`` (or earlier, whenever ``max_pending`` records are queued), so every host
    shard of the bundle downloads at once.
    """

    def __init__(self, output: str, settings: DownloadSettings, policy: AddressPolicy) -> None:
        self.output = output
        self.settings = settings
        self.policy = policy

    def setup(self) -> None:
        self._store = store_for(self.output, fsync=self.settings.fsync)
        threads = self.settings.write_threads if self._store.is_local else max(64, self.settings.write_threads)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="beam-gbif-write")
        # Decode/resize is CPU-bound: one thread per core (Pillow releases the GIL), apart from the
        # I/O-bound writers, so a decoded image per thread is all the pixels held at once.
        image_threads = self.settings.images.image_threads or os.cpu_count() or 2
        self._image_executor = ThreadPoolExecutor(image_threads, thread_name_prefix="beam-gbif-image")
        self._loop = asyncio.new_event_loop()
        self._engine = FetchEngine(self.settings, self.policy, self._store, self._executor, image_executor=self._image_executor)
        if not self.settings.session_per_bundle:
            self._loop.run_until_complete(self._engine.open())
        self._progress = DownloadProgress(self.settings.progress_interval)

    def start_bundle(self) -> None:
        if self.settings.session_per_bundle:
            self._loop.run_until_complete(self._engine.open())
        self._tasks: set[asyncio.Task] = set()
        self._finished: collections.deque = collections.deque()
        self._below = asyncio.Event()
        self._target = 0
        self._folders: dict[str, Any] = {}  # listings are per bundle: a retried bundle sees its own earlier writes

    def process(self, element: tuple[tuple[str, int], Any], window: Any = beam.DoFn.WindowParam,
                timestamp: Any = beam.DoFn.TimestampParam) -> Any:
        key, records = element
        for record in records:
            task = self._loop.create_task(self._engine.handle(record, key, self._folders))
            task.add_done_callback(functools.partial(self._done, record, window, timestamp))
            self._tasks.add(task)
            if len(self._tasks) >= self.settings.max_pending:
                self._run_until_below(self.settings.max_pending // 2)
                yield from self._emit()
        # One turn of the loop: the new tasks send their first requests while Beam reads the next group.
        self._loop.run_until_complete(asyncio.sleep(0))
        yield from self._emit()

    def finish_bundle(self) -> Any:
        self._run_until_below(1)
        yield from self._emit()
        self._progress.maybe_log()
        if self.settings.session_per_bundle:
            self._loop.run_until_complete(self._engine.close())

    def _done(self, record: MediaRecord, window: Any, timestamp: Any, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        try:
            result, attempts = task.result()
        except BaseException as exc:  # noqa: BLE001 - the record still gets its row
            result, attempts = failed(record, Status.FAILED_CONNECTION, f"internal error: {exc!r}"), 0
        self._progress.count(result, attempts)
        self._finished.append(WindowedValue(result, timestamp, (window,)))
        if len(self._tasks) < self._target:
            self._below.set()

    def _run_until_below(self, target: int) -> None:
        async def wait() -> None:
            while len(self._tasks) >= target:
                self._target = target
                self._below.clear()
                try:
                    await asyncio.wait_for(self._below.wait(), timeout=self.settings.progress_interval)
                except TimeoutError:
                    pass
                self._progress.maybe_log()

        self._loop.run_until_complete(wait())

    def _emit(self) -> Any:
        while self._finished:
            yield self._finished.popleft()

    def teardown(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is None:
            return
        try:
            loop.run_until_complete(self._engine.close())
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        loop.close()
        self._executor.shutdown(wait=True)
        self._image_executor.shutdown(wait=True)
        self._loop = None


class DownloadMedia(beam.PTransform):
    """PCollection[MediaRecord] → PCollection[MediaRecord] with status/path/bytes/sha256/content_type/error.

    Files land at ``output/[split/]label_dir/basename.ext`` (local folder or gs://bucket/prefix);
    a file already there (any extension) is SKIPPED_EXISTING without a request.
    """

    def __init__(self, settings: DownloadSettings) -> None:
        super().__init__()
        host_shard_coder = coders.TupleCoder([coders.StrUtf8Coder(), coders.VarIntCoder()])
        self._group_by_host_shard = GroupByKeyOnDisk(settings.scratch_dir, key_coder=host_shard_coder, value_coder=MediaRecordCoder())
        self.settings = settings
        self.output = settings.output
        self.policy = settings.policy

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        shards = host_shards(self.settings.per_host_concurrency)
        return (records
                | "KeyByHostShard" >> beam.Map(lambda r, n: (host_shard_key(r.url, n), r), shards).with_output_types(
                    tuple[tuple[str, int], MediaRecord])
                | "GroupByHostShard" >> self._group_by_host_shard
                | "Fetch" >> beam.ParDo(_DownloadFn(self.output, self.settings, self.policy)).with_output_types(MediaRecord))
