"""A real GCS emulator (``gcp-storage-emulator``) on 127.0.0.1 for tests, demos and benchmarks.

    with GcsEmulator(bucket="test-bucket") as gcs:
        store_for(f"gs://{gcs.bucket}/dataset")   # google-cloud-storage talks to the emulator

While active it sets ``STORAGE_EMULATOR_HOST`` (google-cloud-storage then targets the emulator;
``beam_gbif.io.store.gcs_client`` uses anonymous credentials) and the variables that stop
Google's auth libraries from probing the GCE metadata server, and makes Beam's own GCS filesystem
connect anonymously at once in this process (``beam_gcs_anonymous``); everything is restored on exit.
Like GCS, and unlike the bare emulator, it refuses a create-only upload (``ifGenerationMatch=0``)
onto an existing object with 412 (``gcs_create_only.py``).
Subprocesses get the same environment from ``env()``; a subprocess that uses Beam's gs:// IO should
call ``beam_gcs_anonymous()`` itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

NO_METADATA_ENV = {
    "NO_GCE_CHECK": "True",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
}


def beam_gcs_anonymous(enable: bool = True) -> None:
    """Makes Beam's own GCS filesystem (gs:// in FileSystems, ReadFromText, ...) connect anonymously at once.

    Without credentials Beam retries ``google.auth.default()`` with backoff for ~30-40 s before it
    falls back to anonymous access; against the emulator anonymous is what we want. This presets
    Beam's (internal) credential cache of this process; ``enable=False`` clears it again.
    """
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = enable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def emulator_command() -> list[str]:
    """The emulator, wrapped so it refuses a create-only upload onto an existing object (as GCS does)."""
    return [sys.executable, "-m", "beam_gbif.testing.gcs_create_only"]


class GcsEmulator:
    """Starts ``gcp-storage-emulator start --in-memory`` as a subprocess on a free loopback port.

    Attributes while running: ``endpoint`` (``http://127.0.0.1:PORT``), ``bucket``, ``host``
    (``127.0.0.1:PORT``, the value of STORAGE_EMULATOR_HOST). ``env()`` gives the environment a
    subprocess (e.g. a pipeline under test) needs to use the emulator.
    """

    def __init__(self, bucket: str = "beam-gbif-test", startup_timeout: float = 30.0) -> None:
        self.bucket = bucket
        self.startup_timeout = startup_timeout
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        return {**NO_METADATA_ENV, "STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": "beam-gbif-emulator"}

    def start(self) -> GcsEmulator:
        self.port = free_port()
        cmd = [*emulator_command(), "start", "--host=127.0.0.1", f"--port={self.port}", "--in-memory",
               f"--default-bucket={self.bucket}", "--quiet"]
        # The wrapper module comes from this very package, whatever else is installed.
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        child_env = {**os.environ, **NO_METADATA_ENV, "PYTHONPATH": python_path}
        self._process = subprocess.Popen(cmd, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"gcp-storage-emulator exited with {self._process.returncode}: {err[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{self.bucket}", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gcp-storage-emulator did not answer on {self.endpoint} within {self.startup_timeout:.0f} s")
            time.sleep(0.1)
        for name, value in self.env().items():
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        beam_gcs_anonymous(True)
        return self

    def stop(self) -> None:
        if self._saved_env:
            beam_gcs_anonymous(False)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
