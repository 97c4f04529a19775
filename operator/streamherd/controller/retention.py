"""The RetentionPolicy loop: trim (and, for key patterns, delete) the streams of every
RedisStream that references the policy, in bounded passes, and report what holds it back.

A pass walks every key the RedisStreams' pollers know (all matched keys of a pattern), one
``retain.lua`` call per key, pipelined ``CHUNK`` keys at a time (one pipeline per node on a
cluster), and stops after ``BUDGET_SECONDS`` of work; the next step goes on from there
``MORE_WORK_SECONDS`` later, so Redis is never busy with retention for long. A key whose
step hit a per-call limit is queued again within the pass. When a pass completes, the policy's
status, conditions and metrics are written, and the groups that hold retention back are
published on the Context's ``RetentionBoard`` for their ConsumerGroups' loops.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamherd.api import RETENTION_POLICY, SpecError, is_paused, parse
from streamherd.api.retentionpolicy import RetentionPolicySpec
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.controller.board import stream_groups
from streamherd.controller.context import Context, StreamBinding
from streamherd.controller.groups import start_position
from streamherd.controller.reporting import StatusWriter, report
from streamherd.controller.waiting import Stopped, sleep, stop_watched
from streamherd.decisions.conditions import Verdict, transition
from streamherd.decisions.retention import (
    ManagedGroup,
    PassSummary,
    RetentionRules,
    group_blocks,
    held_groups_status,
    managed_groups,
    policy_verdicts,
    rules_of,
)
from streamherd.gateway import GatewayError, RedisGateway
from streamherd.gateway.retention import Limits, retain
from streamherd.keys import is_auxiliary
from streamherd.kube import requests as rq

logger = logging.getLogger(__name__)

CHUNK = 200
"""Keys per pipeline: each is one short script call."""
BUDGET_SECONDS = 1.0
"""Work per step of a pass; the rest of the pass follows after MORE_WORK_SECONDS."""
MORE_WORK_SECONDS = 1.0
IDLE_SECONDS = 60.0
WAIT_SECONDS = 1.0
MAX_REPEATS = 100
"""Calls on one key within one pass (each bounded by Limits): the rest waits for the next."""
TOTAL_FIELDS = ("trimmedEntries", "deletedStreams", "unconsumedDropped")


def who(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return f"{RETENTION_POLICY.kind}:{meta['namespace']}/{meta['name']}"


# ------------------------------------------------------------------ what the loops share


def managed_on(ctx: Context, binding: StreamBinding) -> tuple[ManagedGroup, ...]:
    pattern = binding.source is not None and binding.source.key is None
    return managed_groups(
        (group, start_position(start, pattern=pattern, created=created))
        for group, start, created in stream_groups(
            ctx.stream_groups, binding.namespace, binding.name
        )
    )


# ------------------------------------------------------------------ a pass


@dataclass
class _Work:
    """The streams of one RedisStream in one pass."""

    binding: StreamBinding
    gateway: RedisGateway
    rules: RetentionRules
    managed: tuple[ManagedGroup, ...]
    queue: deque[str]
    calls: dict[str, int] = field(default_factory=dict)


@dataclass
class PolicyPass:
    """A pass in progress: what is left, what was found so far."""

    work: list[_Work]
    summary: PassSummary = field(default_factory=PassSummary)
    started: float = field(default_factory=time.monotonic)
    longest_call: float = 0.0
    """The longest pipeline of script calls, in seconds."""
    counted: tuple[int, int, int] = (0, 0, 0)
    """(trimmed, deleted, dropped) already added to the totals and metrics."""

    @property
    def done(self) -> bool:
        return all(not w.queue for w in self.work)


async def advance(
    current: PolicyPass,
    *,
    budget: float = BUDGET_SECONDS,
    limits: Limits = Limits(),  # noqa: B008 - frozen
    on_deleted: Any = None,
) -> None:
    """Work on the pass for about ``budget`` seconds (at least one chunk)."""
    deadline = time.monotonic() + budget
    for work in current.work:
        while work.queue:
            if time.monotonic() >= deadline:
                return
            chunk = [work.queue.popleft() for _ in range(min(CHUNK, len(work.queue)))]
            began = time.monotonic()
            try:
                steps = await retain(work.gateway, chunk, work.rules, work.managed, limits=limits)
            except GatewayError as exc:
                current.summary.problems.append(f"{work.binding.name}: {exc.message}")
                work.queue.clear()
                break
            current.longest_call = max(current.longest_call, time.monotonic() - began)
            name = work.binding.name
            for step in steps:
                calls = work.calls[step.key] = work.calls.get(step.key, 0) + 1
                again = step.more and calls < MAX_REPEATS
                current.summary.add(name, step, final=not again)
                if again:
                    work.queue.append(step.key)
                if step.deleted and on_deleted is not None:
                    on_deleted(work.binding, step.key)


def plan_pass(
    bindings: Iterable[StreamBinding],
    spec: RetentionPolicySpec,
    managed: Mapping[str, tuple[ManagedGroup, ...]],
) -> PolicyPass:
    """A new pass over every key the bindings' pollers know (auxiliary keys never)."""
    work = []
    for binding in bindings:
        stream = binding.in_use()
        if stream is None:
            continue
        pattern = stream.source.key is None
        if pattern:
            latest = stream.poller.latest_for(stream.source)
            keys: Sequence[str] = latest.keys_of(stream.source) if latest is not None else ()
        else:
            keys = [str(stream.source.key)]
        work.append(
            _Work(
                binding,
                stream.poller.gateway,
                rules_of(spec, pattern=pattern),
                managed.get(binding.name, ()),
                deque(k for k in keys if not is_auxiliary(k)),
            )
        )
    return PolicyPass(work)


# ------------------------------------------------------------------ the loop


class PolicyLoop:
    """One RetentionPolicy's loop (a kopf daemon)."""

    def __init__(self, ctx: Context, body: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.body = body
        meta = body["metadata"]
        self.namespace, self.name, self.me = meta["namespace"], meta["name"], who(body)
        self.writer = StatusWriter(
            ctx.kube,
            rq.RETENTION_POLICIES,
            body,
            numbers_every=0,  # one write a step at most (a step is at least a second apart)
            heartbeat="lastRun",
        )
        self.current: PolicyPass | None = None
        self.totals: dict[str, int] = {}
        self.limits = Limits()

    async def run(self, stopped: Stopped) -> None:
        wake = self.ctx.wakeup(self.me)
        try:
            async with stop_watched(stopped, wake):
                while not stopped:
                    wake.clear()
                    try:
                        delay = await self.step()
                    except Exception:  # the loop must outlive any one bad pass
                        logger.exception("retention of %s/%s failed", self.namespace, self.name)
                        delay = WAIT_SECONDS * 2
                    await sleep(stopped, wake, delay)
        finally:
            self.ctx.retention.withdraw(self.namespace, self.name)
            self.ctx.metrics.forget_retention(self.namespace, self.name)

    def bindings(self) -> list[StreamBinding]:
        """The RedisStreams (their loops' bindings) that reference this policy."""
        return sorted(
            (
                b
                for b in self.ctx.streams.values()
                if b.namespace == self.namespace
                and b.spec is not None
                and b.spec.retention_policy_ref is not None
                and b.spec.retention_policy_ref.name == self.name
            ),
            key=lambda b: b.name,
        )

    async def step(self) -> float:
        meta = self.body["metadata"]
        generation = meta.get("generation")
        if is_paused(meta):
            self.current = None
            self.ctx.retention.withdraw(self.namespace, self.name)
            await report(
                self.writer,
                [
                    Verdict.not_ready(
                        Reason.PAUSED, "paused by the streamherd.io/paused annotation"
                    ),
                    Verdict(
                        ConditionType.PAUSED,
                        ConditionStatus.TRUE,
                        Reason.PAUSED,
                        "no streams are trimmed or deleted",
                    ),
                ],
                generation,
                None,
            )
            return IDLE_SECONDS
        try:
            spec = parse(RetentionPolicySpec, self.body.get("spec"))
        except SpecError as exc:
            self.current = None
            await report(
                self.writer, [Verdict.not_ready(Reason.INVALID_SPEC, str(exc))], generation, None
            )
            return IDLE_SECONDS
        bindings = self.bindings()
        if self.current is None:
            if any(b.problem is None and b.poller is None for b in bindings) and self.ctx.young():
                return WAIT_SECONDS  # a RedisStream loop still connecting at start-up
            managed = {b.name: managed_on(self.ctx, b) for b in bindings}
            self.current = plan_pass(bindings, spec, managed)
        await advance(self.current, limits=self.limits, on_deleted=self.forget_key)
        await self.write_totals(generation)
        if not self.current.done:
            return MORE_WORK_SECONDS
        finished, self.current = self.current, None
        await self.finish(finished, spec, [b.name for b in bindings], generation)
        return spec.interval.seconds

    def forget_key(self, binding: StreamBinding, key: str) -> None:
        """A deleted stream leaves its RedisStream's key set at once (not at the next SCAN)."""
        if binding.poller is not None and binding.source is not None:
            binding.poller.forget(binding.source, key)

    async def write_totals(self, generation: int | None) -> None:
        """Cumulative counters after every step (a pass may take several)."""
        assert self.current is not None
        summary = self.current.summary
        totals = self.writer.resume_counters(self.totals, TOTAL_FIELDS)
        labels = (self.namespace, self.name)
        m = self.ctx.metrics
        now = (summary.trimmed, len(summary.deleted), summary.unconsumed_dropped)
        new_trimmed, new_deleted, new_dropped = (
            a - b for a, b in zip(now, self.current.counted, strict=True)
        )
        self.current.counted = now
        totals["trimmedEntries"] += new_trimmed
        totals["deletedStreams"] += new_deleted
        totals["unconsumedDropped"] += new_dropped
        m.retention_trimmed.labels(*labels).inc(new_trimmed)
        m.retention_deleted.labels(*labels).inc(new_deleted)
        m.retention_unconsumed_dropped.labels(*labels).inc(new_dropped)
        if new_trimmed or new_deleted or new_dropped:
            await self.writer.write(dict(totals))

    async def finish(
        self,
        finished: PolicyPass,
        spec: RetentionPolicySpec,
        redis_streams: Sequence[str],
        generation: int | None,
    ) -> None:
        summary = finished.summary
        summary.seconds = time.monotonic() - finished.started
        now_ms = int(time.time() * 1000)
        blocks = group_blocks(summary, self.name, spec, now_ms)
        self.ctx.retention.publish(self.namespace, self.name, blocks, spec.interval.seconds)
        m, labels = self.ctx.metrics, (self.namespace, self.name)
        m.retention_runs.labels(*labels, "error" if summary.problems else "complete").inc()
        m.retention_duration.labels(*labels).observe(summary.seconds)
        m.retention_streams.labels(*labels).set(summary.streams)
        m.set_retention_holds(
            self.namespace,
            self.name,
            {(h.redis_stream, h.group): h.streams for h in summary.holds.values()},
        )
        for redis_stream, key in summary.deleted:
            logger.info(
                "retention %s/%s: deleted idle stream %r of RedisStream %s",
                self.namespace,
                self.name,
                key,
                redis_stream,
            )
        verdicts = policy_verdicts(summary, spec, redis_streams, now_ms)
        before = dict(self.writer.current)
        fields: dict[str, Any] = {
            "streams": summary.streams,
            "redisStreams": sorted(redis_streams),
            "blockedGroups": held_groups_status(summary, now_ms),
            "lastRunSeconds": round(summary.seconds, 3),
            **self.totals,
        }
        await report(self.writer, verdicts, generation, fields)
        await self.announce(before, summary, spec)

    async def announce(
        self, before: Mapping[str, Any], summary: PassSummary, spec: RetentionPolicySpec
    ) -> None:
        """Events: every pass that dropped unconsumed entries (loud, on purpose), and a group
        starting to hold retention back."""
        after = self.writer.current
        if summary.unconsumed_dropped:
            dropped = _condition(after, ConditionType.UNCONSUMED_DROPPED)
            await self.writer.event(
                "Warning", str(Reason.HARD_MAX_LENGTH), str(dropped.get("message") or "")
            )
        changed = transition(before, after, ConditionType.RETENTION)
        if changed is not None and changed.get("reason") == Reason.RETENTION_BLOCKED:
            await self.writer.event(
                "Warning", str(Reason.RETENTION_BLOCKED), str(changed.get("message"))
            )


def _condition(status: Mapping[str, Any], type_: ConditionType) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return {}


async def run(ctx: Context, body: Mapping[str, Any], stopped: Stopped) -> None:
    await PolicyLoop(ctx, body).run(stopped)
