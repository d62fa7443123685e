"""One way to serve a local stand-in: an aiohttp app on a daemon thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web


class AppThread:
    """Serves ``make_app()`` on ``host:port`` (0 = a free port) until ``stop()``.

    The app is built inside the server's own loop, so handlers and middlewares bind to it; a
    failure to start (port taken, bad app) is raised in the caller's thread.
    """

    def __init__(self, make_app: Callable[[], web.Application], host: str = "127.0.0.1", port: int = 0, *, name: str = "aiohttp",
                 runner_options: dict[str, Any] | None = None, site_options: dict[str, Any] | None = None) -> None:
        self._make_app = make_app
        self._host, self._port, self._name = host, port, name
        self._runner_options = {"access_log": None, **(runner_options or {})}
        self._site_options = site_options or {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self) -> int:
        """Starts serving; returns the bound port."""
        started = threading.Event()
        errors: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                runner = loop.run_until_complete(self._start_site())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the starting thread
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
        self._thread.start()
        if not started.wait(timeout=30):
            raise RuntimeError(f"{self._name} did not start within 30 s")
        if errors:
            self._thread = self._loop = None
            raise RuntimeError(f"{self._name} could not start on {self._host}:{self._port}: {errors[0]}") from errors[0]
        return self.port

    async def _start_site(self) -> web.AppRunner:
        runner = web.AppRunner(self._make_app(), **self._runner_options)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, **self._site_options)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop = self._thread = None
        self.port = None
