"""Events, aggregated as client-go's EventCorrelator does: the first occurrence of a reason on
an object creates an Event; a repeat (same object, type and reason) updates that Event's
``count``, ``lastTimestamp`` and message instead of creating another object. A repeat is a
deferrable write: when the write budget is short it is counted in memory and written with the
next one (the count is then briefly low, never an extra object).

What keeps it consistent: the recorder remembers the Events it created (by object uid, type
and reason; the most recent ``MAX_KEYS``). After a restart it starts afresh (a new Event per
reason, as client-go does). An Event deleted meanwhile (the API server's event TTL, an hour by
default) answers the update with 404 and is created again."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamherd.kube import requests as rq
from streamherd.kube.budget import Priority
from streamherd.kube.errors import Conflict, NotFound, WriteDeferred

if TYPE_CHECKING:
    from streamherd.kube.client import KubeClient

MAX_KEYS = 4096  # client-go's maxLruCacheEntries


@dataclass
class _Seen:
    namespace: str
    name: str
    count: int
    written: int
    """The count the Event in the API has (``count - written`` repeats wait for the budget)."""


def _stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, kube: KubeClient, component: str = "streamherd") -> None:
        self._kube = kube
        self.component = component
        self._seen: OrderedDict[tuple[str, str, str], _Seen] = OrderedDict()
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        """One per key while it posts: a repeat waits for the create of its first (no
        duplicate Events), other objects' Events do not wait behind a slow one."""

    @staticmethod
    def key(involved: dict[str, Any], type_: str, reason: str) -> tuple[str, str, str]:
        meta = involved.get("metadata") or {}
        who = (
            meta.get("uid") or f"{involved.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"
        )
        return (str(who), type_, reason)

    async def post(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str
    ) -> None:
        """Record one occurrence (raises KubeError if the API refuses a new Event)."""
        key = self.key(involved, type_, reason)
        async with self._locks.setdefault(key, asyncio.Lock()):
            await self._post(key, involved, type_, reason, message)
        if len(self._locks) > 2 * MAX_KEYS:  # forget idle keys the Events LRU forgot
            for stale in [k for k, v in self._locks.items() if k not in self._seen]:
                if not self._locks[stale].locked():
                    del self._locks[stale]

    async def _post(
        self,
        key: tuple[str, str, str],
        involved: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            seen.count += 1
            try:
                await self._kube.send(
                    rq.merge_patch(
                        rq.EVENTS,
                        seen.namespace,
                        seen.name,
                        {
                            "count": seen.count,
                            "lastTimestamp": _stamp(),
                            "message": message[:1024],
                        },
                    ),
                    deferrable=True,
                )
                seen.written = seen.count
                return
            except WriteDeferred:
                return  # counted; the next repeat writes it
            except NotFound:
                del self._seen[key]  # expired: a new Event below
        request = rq.event(
            involved,
            type_=type_,
            reason=reason,
            message=message,
            component=self.component,
            name=f"{(involved.get('metadata') or {}).get('name', 'streamherd')}.{secrets.token_hex(8)}",
        )
        with contextlib.suppress(Conflict):  # a retried create that had reached the server
            await self._kube.send(request, priority=Priority.EVENT)
        body = request.body
        self._seen[key] = _Seen(body["metadata"]["namespace"], body["metadata"]["name"], 1, 1)
        while len(self._seen) > MAX_KEYS:
            self._seen.popitem(last=False)

    def count(self, involved: dict[str, Any], type_: str, reason: str) -> int:
        """How many occurrences were recorded (tests, and the write budget's own checks)."""
        seen = self._seen.get(self.key(involved, type_, reason))
        return seen.count if seen is not None else 0
