"""What `streamherd dlq` does with dead-letter records: which entries a selection names, how
each goes back to its group, what the listing counts. Pure; the I/O is in
``streamherd.controller.deadletters`` and ``streamherd.gateway.deadletter``.

How an entry goes back follows the group's recovery strategy (README, Recovery):

- ``Claim`` (consumers that read their own history): the original entry, by its id, into the
  group's own PEL (``XCLAIM ... FORCE JUSTID`` to its most recently active consumer): nothing
  appears in the stream, no other group sees it. When the original was trimmed meanwhile, a
  copy as below.
- ``Requeue`` (any consumer): a copy appended to the stream, tagged for the group
  (``streamherd-group``) with a fresh delivery budget. Other groups on the stream see the copy
  too: their SDK consumers acknowledge it without processing it; plain consumers would
  process it. The plan says so, naming those groups.

Idempotent on the origin id: an entry's records are its token; the replay script checks they
still exist, puts the entry back, and deletes them, in one atomic call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from streamherd.api.consumergroup import RecoveryStrategy
from streamherd.observations import DeadLetterRecord

REPLAY_CONSUMER = "streamherd-replay"
"""Who a claimed entry is given to when its group has no consumer: the janitor (strategy
Claim) hands it to a live one once it is stale (minIdle)."""


class Method(StrEnum):
    CLAIM = "claim"
    COPY = "copy"


@dataclass(frozen=True)
class Entry:
    """One dead-lettered entry: its record(s) in one dead-letter stream (several records of
    the same origin, stream and group are one entry: replaying it once replays them all)."""

    dead_letter: str
    stream: str
    group: str
    origin_id: str
    records: tuple[DeadLetterRecord, ...]

    @property
    def record_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.records)


def entries(records: Iterable[DeadLetterRecord]) -> tuple[list[Entry], list[DeadLetterRecord]]:
    """Records grouped into entries, in the order of their first record; and the records that
    are not streamherd's (no origin id, stream or group): never replayed."""
    grouped: dict[tuple[str, str, str, str], list[DeadLetterRecord]] = {}
    foreign = []
    for r in records:
        if r.origin_id is None or r.stream is None or r.group is None:
            foreign.append(r)
            continue
        grouped.setdefault((r.key, r.stream, r.group, r.origin_id), []).append(r)
    found = [
        Entry(dead_letter=k[0], stream=k[1], group=k[2], origin_id=k[3], records=tuple(rs))
        for k, rs in grouped.items()
    ]
    return found, foreign


@dataclass(frozen=True)
class Selection:
    """Which entries a command acts on: every given criterion must match (an entry matches a
    record id when any of its records has it). Nothing given selects nothing unless
    ``everything``: a replay or purge of a whole stream is asked for by name (--all)."""

    groups: frozenset[str] = frozenset()
    streams: frozenset[str] = frozenset()
    record_ids: frozenset[str] = frozenset()
    origin_ids: frozenset[str] = frozenset()
    everything: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.groups or self.streams or self.record_ids or self.origin_ids or self.everything
        )

    def matches(self, entry: Entry) -> bool:
        if self.empty:
            return False
        return (
            (not self.groups or entry.group in self.groups)
            and (not self.streams or entry.stream in self.streams)
            and (not self.origin_ids or entry.origin_id in self.origin_ids)
            and (not self.record_ids or any(i in self.record_ids for i in entry.record_ids))
        )

    def matches_record(self, r: DeadLetterRecord) -> bool:
        """For listing and showing: a filter (nothing given: every record)."""
        return (
            (not self.groups or r.group in self.groups)
            and (not self.streams or r.stream in self.streams)
            and (not self.origin_ids or r.origin_id in self.origin_ids)
            and (not self.record_ids or r.id in self.record_ids)
        )


@dataclass(frozen=True)
class Step:
    """How one entry goes back."""

    entry: Entry
    method: Method
    claim_to: str | None = None
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        e = self.entry
        where = f"{e.origin_id} of {e.stream!r} for group {e.group!r}"
        if self.method is Method.CLAIM:
            how = f"claim {where} to consumer {self.claim_to!r} (by id; a copy if it was trimmed)"
        else:
            how = f"copy {where} to the stream's tail, tagged for {e.group!r}"
        records = f" ({len(e.records)} records)" if len(e.records) > 1 else ""
        return how + records + "".join(f"; {n}" for n in self.notes)


def plan(
    chosen: Sequence[Entry],
    *,
    strategies: Mapping[str, RecoveryStrategy],
    default: RecoveryStrategy,
    consumers: Mapping[tuple[str, str], Sequence[str]],
    groups_on: Mapping[str, Sequence[str]],
) -> list[Step]:
    """A step per entry. ``strategies``: per group name, from its ConsumerGroup (``default``
    for a group without one); ``consumers``: per (stream, group), most recently active
    first; ``groups_on``: the groups on each stream."""
    steps = []
    for entry in chosen:
        strategy = strategies.get(entry.group, default)
        others = sorted(g for g in groups_on.get(entry.stream, ()) if g != entry.group)
        notes: list[str] = []
        if entry.group not in groups_on.get(entry.stream, ()):
            notes.append(f"group {entry.group!r} is not on {entry.stream!r}: it will be kept")
        if strategy is RecoveryStrategy.CLAIM:
            live = consumers.get((entry.stream, entry.group)) or ()
            target = live[0] if live else REPLAY_CONSUMER
            if not live:
                notes.append(
                    f"the group has no consumer: claimed to {REPLAY_CONSUMER!r}, the janitor "
                    "hands it to a live one after minIdle"
                )
            steps.append(Step(entry, Method.CLAIM, target, tuple(notes)))
            continue
        if others:
            notes.append(
                f"{entry.stream!r} is also read by {', '.join(others)}: their streamherd SDK "
                "consumers acknowledge a copy tagged for another group without processing it; "
                "plain consumers would process it (strategy Claim keeps it inside the group)"
            )
        steps.append(Step(entry, Method.COPY, None, tuple(notes)))
    return steps


@dataclass(frozen=True)
class Count:
    """One line of `streamherd dlq list`."""

    dead_letter: str
    stream: str
    group: str
    records: int
    oldest: str
    newest: str
    consumers: tuple[str, ...] = field(default=())


def counts(records: Iterable[DeadLetterRecord]) -> list[Count]:
    """Records per (dead-letter stream, stream, group), oldest and newest record id, and who
    held them last; records that are not streamherd's count under stream/group "?"."""
    rows: dict[tuple[str, str, str], list[DeadLetterRecord]] = {}
    for r in records:
        rows.setdefault((r.key, r.stream or "?", r.group or "?"), []).append(r)
    return [
        Count(
            dead_letter=k[0],
            stream=k[1],
            group=k[2],
            records=len(rs),
            oldest=rs[0].id,
            newest=rs[-1].id,
            consumers=tuple(sorted({r.consumer for r in rs if r.consumer})),
        )
        for k, rs in sorted(rows.items())
    ]
