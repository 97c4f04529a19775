"""Fields streamherd writes into stream entries, and what they mean: pure, no I/O.

The janitor (``gateway/scripts/recover.lua``, where these names are literals too) writes them
on re-queued copies and dead-letter records; the consumer SDK reads them. One place for both,
importable without the gateway. The recovery mechanism is described in README.md (Recovery).

A re-queued copy (strategy Requeue) is the original entry's fields preceded by
``ORIGIN_ID_FIELD``, ``DELIVERIES_FIELD`` and ``GROUP_FIELD``. It is work for the group it
names only: a consumer of another group acknowledges it without processing it, and that
group's janitor never counts its deliveries.

A dead-letter record is the entry's fields preceded by ``ORIGIN_ID_FIELD``, ``STREAM_FIELD``,
``GROUP_FIELD`` (the group it was poison for), ``CONSUMER_FIELD`` and ``DELIVERIES_FIELD``; an
entry too large to go in one record (more than ``ENTRY_FIELDS_MAX`` fields) is written as
several records, each carrying ``PART_FIELD``.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "streamherd-"
"""Every field streamherd writes starts with this; consumers ignore such fields, and the SDK's
``publish`` refuses them: an entry carrying a copy's header is taken for a copy (README,
"What one entry may carry")."""

ORIGIN_ID_FIELD = "streamherd-origin-id"
"""On a re-queued copy and a dead-letter record: the id the message first had (deduplicate
on it: a copy has a new id)."""
DELIVERIES_FIELD = "streamherd-deliveries"
"""On a re-queued copy: deliveries to its group so far; on a dead-letter record: in total.
Counted only on an entry that also has ``ORIGIN_ID_FIELD`` (a copy), and only when it is
digits: a producer's own field of that name counts for nothing (recover.lua, the SDK)."""
GROUP_FIELD = "streamherd-group"
"""On a re-queued copy: the group it is work for; on a dead-letter record: the group it was
poison for."""
STREAM_FIELD = "streamherd-stream"
CONSUMER_FIELD = "streamherd-consumer"
"""Dead-letter record: the stream, and the consumer that last held the entry."""
PART_FIELD = "streamherd-part"
"""Dead-letter record of an oversized entry: "<i>/<n>", its i-th record of n (each holds up to
``ENTRY_FIELDS_MAX`` of its fields, in order)."""

ENTRY_FIELDS_MAX = 3000
"""The most field-value pairs of an entry the janitor copies in one ``XADD``: a Lua script
passes at most ~8,000 values to one command (the unpack limit). A larger entry is never
re-queued: it is dead-lettered, in parts."""

JANITOR_FIELDS = frozenset(
    {ORIGIN_ID_FIELD, DELIVERIES_FIELD, GROUP_FIELD, STREAM_FIELD, CONSUMER_FIELD, PART_FIELD}
)


def is_copy_for_another_group(fields: Mapping[str, str], group: str) -> bool:
    """A re-queued copy made for another group: not work for ``group`` (acknowledge it
    without processing). An entry without ``GROUP_FIELD`` is work for every group."""
    tagged = fields.get(GROUP_FIELD)
    return tagged is not None and ORIGIN_ID_FIELD in fields and tagged != group


def own_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """An entry's fields without those streamherd added."""
    return {k: v for k, v in fields.items() if k not in JANITOR_FIELDS}
