"""One janitor pass over a group's streams, in named steps, at a cost proportional to the work.

The last poll (shared with autoscaling: no extra Redis work) says, per stream, how many
entries the group has pending and how many consumers it has. A stream with nothing pending
costs nothing more, unless its consumers need a look (``decisions.recovery.needs_look``: never
looked at, their number changed, one of them is a pod that is gone, or one may have become
removable as idle). The rest go in pipelined batches, one pipeline per node per round:

  1. ``_select``: the streams to look at (pending > 0, unknown, or consumers due);
  2. ``_read_consumers``: XINFO CONSUMERS of those, and a plan per stream (dead consumers,
     claim targets, removals) from the Deployment's pods;
  3. ``_recover_dead``: every entry of each dead consumer, at once (rounds of recover.lua
     calls, one per stream and dead consumer);
  4. ``_remove``: consumers whose pods are gone once their PEL is empty, idle ones without a
     pod after ``removeIdleConsumersAfter`` (one remove_consumers.lua call per stream);
  5. ``_scan_stale``: stale entries (idle >= minIdle) of streams with pending entries, each
     from where its last scan stopped (rounds of one call per stream).
Work stops at ``timeBudget``, checked between rounds; the next pass goes on from the cursors
it left, starting with the stream it did not reach.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from streamherd.api.consumergroup import Recovery, RecoveryStrategy
from streamherd.decisions.recovery import (
    ConsumerMemo,
    ConsumerPlan,
    Pods,
    RecoveryFindings,
    consumer_memo,
    dead_letter_target,
    needs_look,
    next_offset,
    plan_consumers,
)
from streamherd.gateway import RedisGateway
from streamherd.gateway import recovery as redis_recovery
from streamherd.gateway.errors import GatewayError
from streamherd.gateway.recovery import Batch, BatchCall, RecoverySettings, Strategy
from streamherd.observations import ConsumerState, GroupState, Observation, StreamStatus

PodsReader = Callable[[], Awaitable[Pods | None]]

LOOKS_PER_PASS = 1000
"""Streams with nothing pending whose consumers are looked at in one pass, at most (the rest
wait for the next passes): a pattern's thousands of new streams never make one pass long."""
CALLS_PER_ROUND = 200
"""recover.lua calls in one pipeline: a round stays short, so the time budget holds."""
COMMANDS_PER_PIPELINE = 1000


@dataclass
class Progress:
    """What a janitor remembers between passes: where each stream's stale scan stopped, the
    round-robin position, which stream goes first next time, and what it last saw of each
    stream's consumers (so an idle stream costs nothing until they need a look)."""

    cursors: dict[str, str] = field(default_factory=dict)
    offset: int = 0
    first_key: int = 0
    looked: dict[str, ConsumerMemo] = field(default_factory=dict)


@dataclass
class Outcome:
    """One pass, summed over its streams."""

    keys: int = 0
    """Streams the group exists on (the others were skipped)."""
    looked: int = 0
    """Streams whose consumers were read (the others cost nothing)."""
    requeued: int = 0
    claimed: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    held: int = 0
    acked: int = 0
    kept: int = 0
    foreign: int = 0
    oversized: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    """The first failure of each batch that had one (its entries stay pending)."""
    removed: list[str] = field(default_factory=list)
    dead_letter_keys: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    """Stream -> why its poison entries cannot be dead-lettered (known from the spec)."""
    unusable: dict[str, str] = field(default_factory=dict)
    """Dead-letter key -> its type, where it exists and is not a stream (found in Redis)."""
    complete: bool = True
    """False when the time budget ended the pass with work left."""
    seconds: float = 0.0

    @property
    def recovered(self) -> int:
        return self.requeued + self.claimed

    def add(self, batch: Batch, *, dead_letter: str | None, count_held: bool) -> None:
        self.requeued += batch.requeued
        self.claimed += batch.claimed
        self.dead_lettered += batch.dead_lettered
        self.dropped += batch.dropped
        self.acked += batch.acked
        self.foreign += batch.foreign
        self.oversized += batch.oversized
        self.failed += batch.failed
        if batch.error:
            self.errors.append(batch.error)
        if batch.dead_lettered and dead_letter is not None:
            self.dead_letter_keys.add(dead_letter)
        if batch.dead_letter_type and dead_letter is not None:
            self.unusable[dead_letter] = batch.dead_letter_type
        if count_held:  # held and kept entries stay where they are: count them once
            self.held += batch.held
            self.kept += batch.kept

    def findings(self) -> RecoveryFindings:
        return RecoveryFindings(dict(self.unusable), self.held)

    def summary(self) -> str:
        text = (
            f"recovered {self.recovered} (re-queued {self.requeued}, claimed {self.claimed}), "
            f"dead-lettered {self.dead_lettered}, dropped {self.dropped}, "
            f"consumers removed {len(self.removed)}, on {self.keys} stream(s) "
            f"in {self.seconds:.2f}s"
        )
        if self.held:
            text += f"; {self.held} entries held pending (no usable dead-letter stream)"
        if self.kept:
            text += f"; {self.kept} stale entries kept pending (no other live consumer)"
        if self.failed:
            text += f"; {self.failed} entries failed to move, left pending: {self.errors[0]}"
        if not self.complete:
            text += "; time budget reached, the next run continues"
        return text


def settings_of(recovery: Recovery) -> RecoverySettings:
    return RecoverySettings(
        strategy=Strategy.CLAIM
        if recovery.strategy is RecoveryStrategy.CLAIM
        else Strategy.REQUEUE,
        max_deliveries=recovery.max_deliveries,
        batch_size=recovery.batch_size,
        dead_letter_cap=recovery.dead_letter.max_length,
    )


async def run_pass(
    gateway: RedisGateway,
    keys: Sequence[str],
    group: str,
    recovery: Recovery,
    *,
    pods: PodsReader,
    progress: Progress,
    observed: Mapping[str, GroupState | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """One bounded janitor pass over ``keys``; raises GatewayError when Redis fails.
    ``observed``: the last poll's state of the group per key (None: the group is not on that
    stream); a key it does not mention is looked at."""
    return await _Pass(gateway, group, recovery, progress, clock).run(keys, observed or {}, pods)


class _Pass:
    def __init__(
        self,
        gateway: RedisGateway,
        group: str,
        recovery: Recovery,
        progress: Progress,
        clock: Callable[[], float],
    ) -> None:
        self.gateway, self.group, self.recovery = gateway, group, recovery
        self.progress, self.clock = progress, clock
        self.started = clock()
        self.deadline = self.started + recovery.time_budget.seconds
        self.settings = settings_of(recovery)
        self.min_idle_ms = int(recovery.min_idle.seconds * 1000)
        self.remove_after_ms = int(recovery.remove_idle_consumers_after.seconds * 1000)
        self.outcome = Outcome()
        self.keys: list[str] = []
        self.unknown: set[str] = set()
        """Keys the last poll did not show: looked at to learn whether the group is there."""
        self.plans: dict[str, ConsumerPlan] = {}
        self.dead_letters: dict[str, str | None] = {}

    async def run(
        self, keys: Sequence[str], observed: Mapping[str, GroupState | None], pods: PodsReader
    ) -> Outcome:
        view = await pods()
        self.keys = list(keys)
        first = self.progress.first_key % len(keys) if keys else 0
        order = [*keys[first:], *keys[:first]]
        active, idle = self._select(order, observed, view)
        if active or idle:
            await self._read_consumers([*active, *idle], view)
            active = [k for k in active if k in self.plans]
            await self._recover_dead([k for k in order if k in self.plans])
            await self._remove([k for k in order if k in self.plans])
            if self.outcome.complete:
                await self._scan_stale(active)
        self._forget(keys, observed)
        self.outcome.seconds = self.clock() - self.started
        return self.outcome

    # ------------------------------------------------------------------ 1. what to look at

    def _select(
        self, order: Sequence[str], observed: Mapping[str, GroupState | None], pods: Pods | None
    ) -> tuple[list[str], list[str]]:
        """(streams with pending entries, or whose state is unknown; streams with nothing
        pending whose consumers are due a look, at most LOOKS_PER_PASS)."""
        gone = pods.gone if pods is not None else frozenset()
        now = self.clock()
        active: list[str] = []
        idle: list[str] = []
        for key in order:
            if key not in observed:
                self.unknown.add(key)
                active.append(key)
                continue
            state = observed[key]
            if state is None:
                continue  # the group is not on this stream (yet)
            self.outcome.keys += 1
            if state.pending > 0:
                active.append(key)
            elif len(idle) < LOOKS_PER_PASS and needs_look(
                self.progress.looked.get(key), state.consumers, gone, now
            ):
                idle.append(key)
        return active, idle

    # ------------------------------------------------------------------ 2. consumers, plans

    async def _read_consumers(self, keys: Sequence[str], pods: Pods | None) -> None:
        listed: dict[str, list[ConsumerState] | GatewayError] = {}
        for chunk in _chunks(keys, COMMANDS_PER_PIPELINE):
            listed.update(await redis_recovery.consumers(self.gateway, chunk, self.group))
        now = self.clock()
        for key in keys:
            found = listed[key]
            if isinstance(found, GatewayError):
                self.progress.looked.pop(key, None)
                continue  # the stream or the group is gone since the poll
            self.outcome.looked += 1
            if key in self.unknown:
                self.outcome.keys += 1
            plan = plan_consumers(
                found,
                pods,
                min_idle_ms=self.min_idle_ms,
                remove_idle_after_ms=self.remove_after_ms,
            )
            self.plans[key] = plan
            self.progress.looked[key] = consumer_memo(
                found, pods, now=now, remove_idle_after_ms=self.remove_after_ms
            )
            target = dead_letter_target(
                key, self.recovery.dead_letter.stream, cluster=self.gateway.endpoint.cluster
            )
            self.dead_letters[key] = target.key
            if target.problem is not None:
                self.outcome.refused[key] = target.problem

    # ------------------------------------------------------------------ 3. dead consumers

    async def _recover_dead(self, keys: Sequence[str]) -> None:
        calls = [
            BatchCall(key, self.dead_letters[key], consumer=name, targets=self.plans[key].targets)
            for key in keys
            for name in self.plans[key].dead
        ]
        unfinished = await self._rounds(calls, count_held=False)
        if unfinished:
            self._continue_with(unfinished[0].key)

    # ------------------------------------------------------------------ 4. removals

    async def _remove(self, keys: Sequence[str]) -> None:
        removals = {key: self.plans[key].removals for key in keys if self.plans[key].removals}
        for chunk in _chunks(list(removals), COMMANDS_PER_PIPELINE):
            removed = await redis_recovery.remove_consumers(
                self.gateway, {key: removals[key] for key in chunk}, self.group
            )
            for key in chunk:
                names = removed.get(key, [])
                self.outcome.removed += names
                memo = self.progress.looked.get(key)
                if names and memo is not None:
                    self.progress.looked[key] = memo.without(names)

    # ------------------------------------------------------------------ 5. stale entries

    async def _scan_stale(self, keys: Sequence[str]) -> None:
        cursors = self.progress.cursors
        calls = [
            BatchCall(
                key,
                self.dead_letters[key],
                start=cursors.get(key, "-"),
                min_idle_ms=self.min_idle_ms,
                targets=self.plans[key].targets,
            )
            for key in keys
        ]
        for key in keys:
            cursors.pop(key, None)
        unfinished = await self._rounds(calls, count_held=True)
        for call in unfinished:
            cursors[call.key] = call.start
        if unfinished:
            self._continue_with(unfinished[0].key)

    # ------------------------------------------------------------------ the rounds

    async def _rounds(self, calls: Sequence[BatchCall], *, count_held: bool) -> list[BatchCall]:
        """Send ``calls`` in pipelined rounds (CALLS_PER_ROUND each); a call whose batch ended
        before the end of what it examines goes on in the next round from where it stopped.
        Returns the calls left when the time budget ran out (none when all were done)."""
        queue = list(calls)
        while queue:
            if self.clock() >= self.deadline:
                self.outcome.complete = False
                return queue
            round_, queue = queue[:CALLS_PER_ROUND], queue[CALLS_PER_ROUND:]
            staggered = [
                BatchCall(
                    c.key,
                    c.dead_letter,
                    c.start,
                    c.consumer,
                    c.min_idle_ms,
                    c.targets,
                    offset=self.progress.offset + i,
                )
                for i, c in enumerate(round_)
            ]
            results = await redis_recovery.recover_batches(
                self.gateway, self.group, self.settings, staggered
            )
            claimed, spread = 0, 0
            more = []
            for call, result in zip(staggered, results, strict=True):
                if isinstance(result, GatewayError):
                    raise result
                self.outcome.add(result, dead_letter=call.dead_letter, count_held=count_held)
                claimed += result.claimed
                spread = max(spread, len(call.targets))
                if result.next_start is not None:
                    more.append(
                        BatchCall(
                            call.key,
                            call.dead_letter,
                            result.next_start,
                            call.consumer,
                            call.min_idle_ms,
                            call.targets,
                        )
                    )
            self.progress.offset = next_offset(self.progress.offset, claimed, spread)
            queue = more + queue
        return []

    def _continue_with(self, key: str) -> None:
        """The next pass starts with the stream this one did not finish."""
        self.progress.first_key = self.keys.index(key) if key in self.keys else 0

    def _forget(self, keys: Iterable[str], observed: Mapping[str, GroupState | None]) -> None:
        """Streams of a pattern that went away, or lost the group: nothing to remember."""
        present = {k for k in keys if k not in observed or observed[k] is not None}
        for memory in (self.progress.cursors, self.progress.looked):
            for key in [k for k in memory if k not in present]:
                del memory[key]


def observed_states(
    observation: Observation | None, keys: Iterable[str], group: str
) -> dict[str, GroupState | None]:
    """What a poll says of the group on each key: its state; None where the stream exists
    without the group, or is missing or of another type; a key it could not read is left
    out (a pass looks at it)."""
    if observation is None or observation.problem is not None:
        return {}
    out: dict[str, GroupState | None] = {}
    for key in keys:
        stream = observation.streams.get(key)
        if stream is None or stream.status is StreamStatus.ERROR:
            continue
        out[key] = stream.groups.get(group) if stream.status is StreamStatus.OK else None
    return out


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
