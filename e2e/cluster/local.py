"""A local "cluster": the API emulator (and optionally the kubelet) on a background thread.

The emulator lives in its own thread and event loop, like a real API server lives in its own
process: tests may block (subprocess.run, time-limited polling, KopfRunner) without starving it,
and sync and async tests use it the same way (over HTTP, or via its thread-safe helpers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from e2e.cluster.apiserver import ApiServer
from e2e.cluster.kubeconfig import write_kubeconfig

_T = TypeVar("_T")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CRDS = REPO_ROOT / "crds"


class LocalCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(
        self,
        *,
        crds: Sequence[str | Path] = (DEFAULT_CRDS,),
        host: str = "127.0.0.1",
        port: int = 0,
        **api_options: Any,
    ) -> None:
        self.api = ApiServer(crds=list(crds), **api_options)
        self.kubelet: Any = None  # e2e.cluster.kubelet.Kubelet once start_kubelet() ran
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the local cluster is not running")
        return self._loop

    def start(self, timeout: float = 10.0) -> LocalCluster:
        self._thread = threading.Thread(target=self._main, name="local-cluster", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the API emulator did not start in time")
        if self._failure is not None:
            raise RuntimeError("the API emulator failed to start") from self._failure
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # pragma: no cover - reported to start()
            self._failure = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.api.serving(self._host, self._port):
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                if self.kubelet is not None:
                    await self.kubelet.stop()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = 60.0) -> _T:
        """Run a coroutine in the cluster's loop and wait for its result."""
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start_kubelet(self, **options: Any) -> Any:
        from e2e.cluster.kubelet import Kubelet

        if self.kubelet is None:
            self.kubelet = Kubelet(self.api, **options)
            self.run(self.kubelet.start())
        return self.kubelet

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.url, namespace)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover
                raise RuntimeError("the local cluster did not stop in time")
        self._thread = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
