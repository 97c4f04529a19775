"""``StreamClient``: Redis Streams commands as a streamherd consumer or producer should use
them (asyncio; ``streamherd.consumer.sync`` has the blocking twin).

Its methods are redis-py's stream commands under the names a ``RedisStreamTransport`` user
knows (publish, read_group, ack, claim, pending, info), with the contract built in:

- ``publish`` appends with ``MAXLEN`` (approximate by default), but never trims a stream that
  has no consumer group yet: a ConsumerGroup on a pattern starts on a new stream at its own
  creation time, so the first events of a call must still be there when the operator creates
  the group. The first time this client writes to a key it also appends the key's name to the
  registry of new streams (``streamherd.keys.REGISTRY_KEY``), in the same round trip, so pattern
  consumers and the operator learn new streams without scanning the keyspace.
- ``read_group`` acknowledges (and never returns) copies the janitor re-queued for another
  group, and entries of the consumer's own history whose stream entry is gone; it returns
  ``Entry`` objects with the ``streamherd-*`` fields stripped, ``origin_id`` and ``deliveries``.

On Redis Cluster (``redis`` a ``RedisCluster``) a read over several streams is one command
per hash slot, pipelined per node (``topology``), and the first ``publish`` to a key registers
it in a second command, after the stream's write (the registry is in another slot).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, cast

from redis import exceptions as rx

from streamherd.consumer.entries import (
    Entry,
    GroupInfo,
    PendingEntry,
    PendingSummary,
    StreamInfo,
    entry,
    foreign,
)
from streamherd.consumer.settings import (
    STANDALONE,
    TEXT,
    AnyRedis,
    Settings,
    client_name,
    connect,
    require_text,
)
from streamherd.consumer.topology import is_cluster, read_streams
from streamherd.fields import PREFIX
from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY, REGISTRY_MAX_LENGTH

logger = logging.getLogger("streamherd.consumer")

NEW = ">"
"""The id that reads entries never delivered to the group."""
HISTORY = "0"
"""The id that reads this consumer's own pending entries from the start."""

_NOGROUP = re.compile(r"No such key '(?P<key>.*)' or consumer group '(?P<group>.*)' in ")


class NoGroupError(rx.ResponseError):
    """A read named a stream that does not exist (any more) or lacks the group. On Redis
    Cluster a read over streams of several hash slots is one command per slot: the others may
    have delivered entries, which are in ``entries`` (and in this consumer's pending entries)."""

    def __init__(self, message: str, key: str | None, entries: Sequence[Entry] = ()) -> None:
        super().__init__(message)
        self.key = key
        self.entries = list(entries)

    @classmethod
    def parse(cls, exc: rx.ResponseError) -> NoGroupError | None:
        text = str(exc)
        if not text.startswith("NOGROUP"):
            return None
        found = _NOGROUP.search(text)
        return cls(text, found["key"] if found else None)


@dataclass
class Read:
    """One ``XREADGROUP`` call: the entries for the handler, and per stream how many entries
    the reply held and the last id (a history read goes on after it)."""

    entries: list[Entry] = field(default_factory=list)
    returned: dict[str, int] = field(default_factory=dict)
    last_ids: dict[str, str] = field(default_factory=dict)
    foreign_acked: int = 0
    """Copies re-queued for another group: acknowledged unprocessed."""
    deleted_acked: int = 0
    """History entries whose stream entry was trimmed or deleted: acknowledged."""
    missing: list[str] = field(default_factory=list)
    """Streams Redis refused to read: without the group (NOGROUP), deleted while read
    (UNBLOCKED) or not a stream (WRONGTYPE). Check them before reading them again."""
    refusals: list[rx.ResponseError] = field(default_factory=list)


class StreamClient:
    """A consumer's (or producer's) view of Redis Streams.

    ``group`` and ``consumer`` are the defaults of the read/ack/claim methods (a publisher
    needs neither). ``maxlen``/``approximate`` are the defaults of ``publish``. ``register``:
    announce new keys in the registry of new streams (on by default)."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        group: str | None = None,
        consumer: str | None = None,
        maxlen: int | None = None,
        approximate: bool = True,
        register: bool = True,
        remember_keys: int = 100_000,
    ) -> None:
        self.redis = redis
        self.group, self.consumer = group, consumer
        self.maxlen, self.approximate, self.register = maxlen, approximate, register
        self._remember = remember_keys
        self._keys: OrderedDict[str, bool] = OrderedDict()
        """Keys this client has published to (registered), and whether they had a group:
        only then may ``publish`` trim. Least recently used first, at most ``remember_keys``
        (one forgotten is registered again: readers ignore keys they already know)."""
        self._registry_broken = False

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> StreamClient:
        return cls(settings.connect(), group=settings.group, consumer=settings.consumer, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> StreamClient:
        """From the contract's environment (``Settings.from_env``)."""
        return cls.from_settings(Settings.from_env(environ), **options)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StreamClient:
        """A client for ``url`` (a producer needs nothing else), decoding as ``TEXT`` (binary
        fields arrive as ``str`` with surrogate escapes); ``mode="Cluster"`` for a
        Redis Cluster (``url`` names any of its nodes); ``group``/``consumer`` and the other
        options of the constructor may be given too, the rest go to redis-py."""
        own = {k: options.pop(k) for k in list(options) if k in _OPTIONS}
        mode = own.pop("mode", STANDALONE)
        if own.get("consumer"):
            options.setdefault("client_name", client_name(own["consumer"]))
        # No CLIENT SETINFO at connect: one command fewer for the ACL (README, "Redis permissions").
        connection = {**TEXT, "driver_info": None, **options}
        return cls(connect(url, mode, **connection), **own)

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ producing

    async def publish(
        self,
        stream: str,
        fields: Mapping[str, str | int | float | bytes],
        *,
        maxlen: int | EllipsisType | None = ...,
        approximate: bool | None = None,
        id: str = "*",
    ) -> str:
        """``XADD`` an entry; returns its id (field names starting with ``streamherd-`` are
        refused: ValueError). ``maxlen`` caps the stream (``~`` unless
        ``approximate=False``), once the stream has a consumer group: until then nothing is
        trimmed (the group the operator creates later starts before these entries)."""
        reserved = [k for k in fields if _name(k).startswith(PREFIX)]
        if reserved:
            # Such a field makes an entry pass for a copy (README: "What one entry may carry").
            raise ValueError(f"field names starting with {PREFIX!r} are streamherd's: {reserved}")
        cap = self.maxlen if maxlen is ... else maxlen
        approx = self.approximate if approximate is None else approximate
        grouped = self._keys.get(stream)
        if grouped is not None:
            self._keys.move_to_end(stream)
        if grouped or (grouped is not None and cap is None):
            added: Any = await self.redis.xadd(stream, _any(fields), id=id, **_cap(cap, approx))
            return cast(str, added)
        announce = grouped is None and self.register and not self._registry_broken
        # On a cluster the registry is in another slot (mostly on another node), and a
        # pipeline sends to the nodes concurrently: readers could learn the key before the
        # stream exists (and forget it). There the registry's XADD is a second round trip,
        # after the stream's; on one server the pipeline keeps the order.
        together = announce and not is_cluster(self.redis)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(stream, _any(fields), id=id)  # untrimmed: no group has seen this stream yet
        if together:  # after the XADD: when readers learn the key, the stream exists
            pipe.xadd(REGISTRY_KEY, {REGISTRY_FIELD: stream}, **_REGISTRY_CAP)
        if cap is not None:
            pipe.xinfo_groups(stream)
        replies = await pipe.execute(raise_on_error=False)
        if isinstance(replies[0], Exception):
            raise replies[0]
        registered: object = replies[1] if together else None
        if announce and not together:
            try:
                registered = await self.redis.xadd(
                    REGISTRY_KEY, {REGISTRY_FIELD: stream}, **_REGISTRY_CAP
                )
            except (rx.ConnectionError, rx.TimeoutError) as exc:
                # The entry is in: failing now would make the caller publish it twice.
                # The key stays unregistered, and the next publish to it tries again.
                logger.warning("cannot register %s in %s now: %s", stream, REGISTRY_KEY, exc)
                return cast(str, replies[0])
            except rx.ResponseError as exc:
                registered = exc
        if announce and isinstance(registered, Exception):
            self._registry_broken = True  # e.g. an ACL without the registry: say it once
            logger.warning(
                "cannot register new streams in %s (%s): pattern consumers and the operator "
                "learn %s only by scanning",
                REGISTRY_KEY,
                registered,
                stream,
            )
        has_group = cap is not None and isinstance(replies[-1], list) and bool(replies[-1])
        self._keys[stream] = has_group
        while len(self._keys) > self._remember:
            self._keys.popitem(last=False)
        return cast(str, replies[0])

    # ------------------------------------------------------------------ consuming

    async def read_group(
        self,
        streams: Mapping[str, str] | Sequence[str],
        *,
        count: int = 10,
        block: int | None = None,
        group: str | None = None,
        consumer: str | None = None,
    ) -> list[Entry]:
        """``XREADGROUP``: ``streams`` maps keys to ids (``>``: new entries; an id: this
        consumer's own pending entries after it), or lists keys to read new entries from.
        ``count`` is per stream (Redis's rule); ``block`` in milliseconds (on Redis Cluster
        only for streams of one hash slot). Raises ``NoGroupError`` naming the stream that
        lacks the group."""
        ids = dict.fromkeys(streams, NEW) if not isinstance(streams, Mapping) else dict(streams)
        read = await self.read(ids, count=count, block=block, group=group, consumer=consumer)
        if read.refusals:
            refusal = read.refusals[0]
            error = NoGroupError.parse(refusal)
            if error is None:
                raise refusal
            error.entries = read.entries
            raise error
        return read.entries

    async def read(
        self,
        ids: Mapping[str, str],
        *,
        count: int,
        block: int | None = None,
        group: str | None = None,
        consumer: str | None = None,
    ) -> Read:
        """``read_group`` with the details a consumer loop needs (``Read``); streams Redis
        refused are in ``Read.missing`` rather than raised."""
        group, consumer = self._who(group, consumer)
        require_text(self.redis)
        reply = await read_streams(
            self.redis, ("XREADGROUP", "GROUP", group, consumer), ids, count=count, block=block
        )
        read = Read()
        for keys, exc in reply.failed:
            read.missing.extend(_refused(keys, exc))
            read.refusals.append(exc)
        acks: dict[str, list[str]] = {}
        history: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for key, items in reply.items:
            read.returned[key] = len(items)
            if items:
                read.last_ids[key] = items[-1][0]
            for entry_id, raw in items:
                if not raw:  # our pending entry whose stream entry is gone: nothing to do
                    acks.setdefault(key, []).append(entry_id)
                    read.deleted_acked += 1
                elif foreign(raw, group):
                    acks.setdefault(key, []).append(entry_id)
                    read.foreign_acked += 1
                elif ids.get(key, NEW) == NEW:
                    read.entries.append(entry(key, entry_id, raw, 1, group))
                else:
                    history.setdefault(key, []).append((entry_id, raw))
        if history:
            counts = await self._delivery_counts(history, group, consumer, read.returned)
            for key, items in history.items():
                for entry_id, raw in items:
                    read.entries.append(entry(key, entry_id, raw, counts.get(entry_id, 1), group))
        if acks:
            await self._ack_many(acks, group)
        return read

    async def _delivery_counts(
        self,
        items: Mapping[str, Sequence[tuple[str, Any]]],
        group: str,
        consumer: str,
        spans: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """Redis's delivery counters of entries just read from this consumer's history."""
        pipe = self.redis.pipeline(transaction=False)
        for key, entries in items.items():
            # The range may also hold entries read but not handed out (deleted, foreign).
            span = (spans or {}).get(key, len(entries))
            pipe.xpending_range(
                key, group, entries[0][0], entries[-1][0], span, consumername=consumer
            )
        counts: dict[str, int] = {}
        for rows in await pipe.execute(raise_on_error=False):
            if isinstance(rows, list):
                counts.update((r["message_id"], int(r["times_delivered"])) for r in rows)
        return counts

    async def ack(self, stream: str, *ids: str, group: str | None = None) -> int:
        """``XACK``: how many of ``ids`` were still pending."""
        if not ids:
            return 0
        return int(
            await self.redis.xack(stream, self._who(group, None, need_consumer=False)[0], *ids)
        )

    async def ack_entries(self, entries: Iterable[Entry], *, group: str | None = None) -> int:
        """Acknowledge entries of any streams, one round trip."""
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        if not by_stream:
            return 0
        return await self._ack_many(by_stream, self._who(group, None, need_consumer=False)[0])

    async def _ack_many(self, by_stream: Mapping[str, Sequence[str]], group: str) -> int:
        if len(by_stream) == 1:
            ((key, ids),) = by_stream.items()
            return int(await self.redis.xack(key, group, *ids))
        pipe = self.redis.pipeline(transaction=False)
        for key, ids in by_stream.items():
            pipe.xack(key, group, *ids)
        return sum(int(n) for n in await pipe.execute())

    async def claim(
        self,
        stream: str,
        ids: Sequence[str],
        *,
        min_idle: int = 0,
        group: str | None = None,
        consumer: str | None = None,
    ) -> list[Entry]:
        """``XCLAIM`` entries idle at least ``min_idle`` ms to this consumer (a delivery: the
        counter goes up). Entries whose stream entry is gone are dropped by Redis."""
        group, consumer = self._who(group, consumer)
        if not ids:
            return []
        require_text(self.redis)
        claimed: Any = await self.redis.xclaim(stream, group, consumer, min_idle, list(ids))
        items = [(i, raw) for i, raw in claimed if raw]
        if not items:
            return []
        counts = await self._delivery_counts({stream: items}, group, consumer)
        return [entry(stream, i, raw, counts.get(i, 1), group) for i, raw in items]

    async def pending(
        self,
        stream: str,
        *,
        count: int = 100,
        start: str = "-",
        end: str = "+",
        consumer: str | None = None,
        min_idle: int | None = None,
        group: str | None = None,
    ) -> list[PendingEntry]:
        """``XPENDING`` extended form: the group's (or one consumer's) pending entries."""
        group = self._who(group, None, need_consumer=False)[0]
        rows: Any = await self.redis.xpending_range(
            stream, group, start, end, count, consumername=consumer, idle=min_idle
        )
        return [
            PendingEntry(
                r["message_id"],
                r["consumer"],
                int(r["time_since_delivered"]),
                int(r["times_delivered"]),
            )
            for r in rows
        ]

    async def pending_summary(self, stream: str, *, group: str | None = None) -> PendingSummary:
        """``XPENDING key group``: count, lowest and highest id, per consumer."""
        group = self._who(group, None, need_consumer=False)[0]
        reply = await self.redis.xpending(stream, group)
        return PendingSummary(
            count=int(reply["pending"]),
            lowest_id=reply["min"],
            highest_id=reply["max"],
            consumers={c["name"]: int(c["pending"]) for c in reply["consumers"] or []},
        )

    async def info(self, stream: str) -> StreamInfo:
        """Length, first and last entry, and every group (``XINFO STREAM`` + ``XINFO GROUPS``)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_stream(stream)
        pipe.xinfo_groups(stream)
        about, groups = await pipe.execute()
        first, last = about.get("first-entry"), about.get("last-entry")
        return StreamInfo(
            key=stream,
            length=int(about["length"]),
            first_id=first[0] if first else None,
            last_id=last[0] if last else None,
            groups=tuple(
                GroupInfo(
                    name=g["name"],
                    consumers=int(g["consumers"]),
                    pending=int(g["pending"]),
                    last_delivered_id=g["last-delivered-id"],
                    lag=None if g.get("lag") is None else int(g["lag"]),
                )
                for g in groups
            ),
        )

    def _who(
        self, group: str | None, consumer: str | None, *, need_consumer: bool = True
    ) -> tuple[str, str]:
        group, consumer = group or self.group, consumer or self.consumer
        if not group:
            raise ValueError("no consumer group: pass group= (or construct the client with one)")
        if need_consumer and not consumer:
            raise ValueError("no consumer name: pass consumer= (or construct the client with one)")
        return group, consumer or ""


_REGISTRY_CAP: dict[str, Any] = {"maxlen": REGISTRY_MAX_LENGTH, "approximate": True}


def _refused(keys: Sequence[str], exc: rx.ResponseError) -> list[str]:
    """The streams a refused read names: the one NOGROUP names, or all of the command's for
    a stream deleted while waited on (UNBLOCKED) or a key of another type. Anything else is
    not about the streams: raised."""
    nogroup = NoGroupError.parse(exc)
    if nogroup is not None:
        if nogroup.key is not None and nogroup.key in keys:
            return [nogroup.key]
        return list(keys)
    text = str(exc)
    if text.startswith(("UNBLOCKED", "WRONGTYPE")):
        return list(keys)
    raise exc


_OPTIONS = frozenset(
    {"mode", "group", "consumer", "maxlen", "approximate", "register", "remember_keys"}
)


def _any(mapping: Mapping[str, Any]) -> Any:
    """A dict for redis-py, whose annotations do not know ``decode_responses``."""
    return dict(mapping)


def _name(key: object) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else str(key)


def _cap(maxlen: int | None, approximate: bool) -> dict[str, Any]:
    return {} if maxlen is None else {"maxlen": maxlen, "approximate": approximate}
