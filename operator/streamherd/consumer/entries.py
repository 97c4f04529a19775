"""What the SDK hands out: stream entries as a consumer should see them, and what Redis says
about pending entries, streams and groups. Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamherd.fields import (
    DELIVERIES_FIELD,
    GROUP_FIELD,
    ORIGIN_ID_FIELD,
    PREFIX,
    is_copy_for_another_group,
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry, delivered to this consumer.

    ``fields`` are the producer's fields only: those streamherd adds (``streamherd-*``) are
    stripped. Fields are text: names and values that are not UTF-8 (binary) arrive with
    their undecodable bytes as lone surrogates (``bytes(name)`` gives the exact bytes back).
    For idempotent processing use ``origin_id``: the id the message first had
    (a copy the janitor re-queued has a new ``id`` but the same ``origin_id``)."""

    stream: str
    id: str
    fields: Mapping[str, str]
    origin_id: str
    deliveries: int
    """How often this group has been handed the message, this delivery included (Redis's
    delivery counter, plus those a re-queued copy carries). More than 1: it was tried before."""

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1

    def bytes(self, name: str) -> bytes:
        """Field ``name``'s value as the producer wrote it: a value that is not UTF-8 reaches
        ``fields`` with its undecodable bytes as lone surrogates (``settings.TEXT``); this
        gives the exact bytes back. ``name`` is as in ``fields`` (a binary name decodes the
        same way). KeyError if absent."""
        return self.fields[name].encode("utf-8", "surrogateescape")


def entry(stream: str, entry_id: str, raw: Mapping[str, str], delivered: int, group: str) -> Entry:
    """An entry as the handler sees it. ``delivered`` is Redis's delivery count for ``group``
    (1 for an entry read with ``>``); a re-queued copy made for this group adds the
    deliveries it carries (a copy for another group is never handed out: see ``foreign``)."""
    carried = 0
    if ORIGIN_ID_FIELD in raw and raw.get(GROUP_FIELD, group) == group:
        carried = _int(raw.get(DELIVERIES_FIELD))
    return Entry(
        stream=stream,
        id=entry_id,
        fields={k: v for k, v in raw.items() if not k.startswith(PREFIX)},
        origin_id=raw.get(ORIGIN_ID_FIELD) or entry_id,
        deliveries=max(delivered, 1) + carried,
    )


def foreign(raw: Mapping[str, str], group: str) -> bool:
    """A copy the janitor re-queued for another group: acknowledged, never processed."""
    return is_copy_for_another_group(raw, group)


def _int(text: str | None) -> int:
    """A count only if it is digits, as recover.lua reads it (a producer may write anything)."""
    return int(text) if text and text.isascii() and text.isdigit() else 0


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One entry of a group's pending entries list (``XPENDING`` extended form)."""

    id: str
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """``XPENDING key group``: how many, the lowest and highest pending id, per consumer."""

    count: int
    lowest_id: str | None
    highest_id: str | None
    consumers: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: int | None
    """Entries not yet delivered to the group; None when Redis cannot say (README)."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    key: str
    length: int
    first_id: str | None
    last_id: str | None
    groups: tuple[GroupInfo, ...] = ()

    def group(self, name: str) -> GroupInfo | None:
        return next((g for g in self.groups if g.name == name), None)
