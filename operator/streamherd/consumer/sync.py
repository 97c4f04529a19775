"""The blocking facade: ``SyncStreamClient`` for code without an event loop (a producer in a
web handler, a script), and ``run`` for a consumer whose handler is a plain function.

``SyncStreamClient`` runs a ``StreamClient`` on its own event loop in a daemon thread, so the
behaviour (registration, trimming rules, foreign copies) is the async client's, not a copy
of it. ``Consumer`` already takes plain functions as handlers (they run in a worker thread)
and ``Consumer.run_forever`` is blocking: ``run`` is the shortest way to both.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from types import EllipsisType
from typing import Any, TypeVar

from streamherd.consumer.client import StreamClient
from streamherd.consumer.entries import Entry, PendingEntry, PendingSummary, StreamInfo
from streamherd.consumer.settings import Settings
from streamherd.consumer.worker import BatchHandler, Consumer, Handler

T = TypeVar("T")


class SyncStreamClient:
    """``StreamClient`` with blocking methods (same names and arguments). Thread-safe: calls
    from several threads share one connection pool and one loop."""

    def __init__(self, make: Any, **options: Any) -> None:
        """``make``: a URL, ``Settings``, or a zero-argument callable returning a
        ``StreamClient`` (called on the client's own loop)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="streamherd-sync-client", daemon=True
        )
        self._thread.start()

        async def build() -> StreamClient:
            if isinstance(make, str):
                return StreamClient.from_url(make, **options)
            if isinstance(make, Settings):
                return StreamClient.from_settings(make, **options)
            return make()  # type: ignore[no-any-return]

        self.client = self._run(build())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> SyncStreamClient:
        return cls(Settings.from_env(environ), **options)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def publish(
        self,
        stream: str,
        fields: Mapping[str, str | int | float | bytes],
        *,
        maxlen: int | EllipsisType | None = ...,
        approximate: bool | None = None,
        id: str = "*",
    ) -> str:
        return self._run(
            self.client.publish(stream, fields, maxlen=maxlen, approximate=approximate, id=id)
        )

    def read_group(
        self, streams: Mapping[str, str] | Sequence[str], *, count: int = 10, **options: Any
    ) -> list[Entry]:
        """``options``: block (ms), group, consumer."""
        return self._run(self.client.read_group(streams, count=count, **options))

    def ack(self, stream: str, *ids: str, group: str | None = None) -> int:
        return self._run(self.client.ack(stream, *ids, group=group))

    def ack_entries(self, entries: Iterable[Entry], *, group: str | None = None) -> int:
        return self._run(self.client.ack_entries(entries, group=group))

    def claim(self, stream: str, ids: Sequence[str], **options: Any) -> list[Entry]:
        """``options``: min_idle (ms), group, consumer."""
        return self._run(self.client.claim(stream, ids, **options))

    def pending(self, stream: str, **options: Any) -> list[PendingEntry]:
        """``options``: count, start, end, consumer, min_idle (ms), group."""
        return self._run(self.client.pending(stream, **options))

    def pending_summary(self, stream: str, *, group: str | None = None) -> PendingSummary:
        return self._run(self.client.pending_summary(stream, group=group))

    def info(self, stream: str) -> StreamInfo:
        return self._run(self.client.info(stream))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncStreamClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def run(
    handler: Handler | None = None,
    *,
    batch_handler: BatchHandler | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> int:
    """Consume as the operator configures consumer pods until SIGTERM; returns 0::

    raise SystemExit(streamherd.consumer.run(handle))
    """
    consumer = Consumer.from_env(handler, batch_handler=batch_handler, environ=environ, **options)
    return consumer.run_forever()
