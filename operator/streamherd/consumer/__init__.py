"""streamherd's consumer SDK: the client side of the consumer contract (README, "Consumer SDK").

A consumer pod::

    from streamherd.consumer import Entry, run

    async def handle(entry: Entry) -> None:       # raise to leave it pending
        await answer(entry.origin_id, entry.fields["text"])

    raise SystemExit(run(handle))                 # configured by the STREAMHERD_* environment

A producer::

    from streamherd.consumer import StreamClient

    client = StreamClient.from_url("redis://redis:6379/0", maxlen=10_000)
    await client.publish(f"conv:{call_id}", {"type": "utterance", "text": text})

Layering: this package talks to Redis only through redis-py and imports nothing of the
operator's I/O layers (gateway, kube, controller, main); only the pure ``streamherd.keys``
and ``streamherd.fields``.
"""

from __future__ import annotations

from streamherd.consumer.client import HISTORY, NEW, NoGroupError, StreamClient
from streamherd.consumer.entries import (
    Entry,
    GroupInfo,
    PendingEntry,
    PendingSummary,
    StreamInfo,
)
from streamherd.consumer.settings import Settings, SettingsError
from streamherd.consumer.sync import SyncStreamClient, run
from streamherd.consumer.worker import BatchHandler, Consumer, Handler, Stats

__all__ = [
    "HISTORY",
    "NEW",
    "BatchHandler",
    "Consumer",
    "Entry",
    "GroupInfo",
    "Handler",
    "NoGroupError",
    "PendingEntry",
    "PendingSummary",
    "Settings",
    "SettingsError",
    "Stats",
    "StreamClient",
    "StreamInfo",
    "SyncStreamClient",
    "run",
]
