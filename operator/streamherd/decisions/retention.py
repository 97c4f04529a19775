"""Retention: what a RetentionPolicy asks of each stream, and what a pass over them found.

Pure. The safety rule itself (the floor below which every group has read and acknowledged
everything) is applied inside Redis, atomically, by ``gateway/scripts/retain.lua``; here the
policy becomes the script's arguments, and the script's replies become status, conditions
and the verdicts handed to the ConsumerGroups that hold retention back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streamherd.api.retentionpolicy import RetentionPolicySpec
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.decisions.conditions import Verdict
from streamherd.observations import Hold, HoldReason, ManagedGroup, RetentionRules, StepOutcome

__all__ = [
    "Hold",
    "HoldReason",
    "ManagedGroup",
    "RetentionRules",
    "StepOutcome",
    "group_blocks",
    "group_verdict",
    "held_groups_status",
    "managed_groups",
    "policy_verdicts",
    "rules_of",
]

MAX_LISTED_HOLDS = 16
"""Blocked groups listed in a RetentionPolicy's status (the rest are counted)."""


def rules_of(spec: RetentionPolicySpec, *, pattern: bool) -> RetentionRules:
    """The policy as the script takes it, for one kind of source (idle deletion: patterns)."""
    idle = spec.delete_idle_streams_after
    return RetentionRules(
        max_length=spec.max_length,
        max_age_ms=None if spec.max_age is None else int(spec.max_age.seconds * 1000),
        approximate=spec.approximate,
        respect_groups=spec.respect_consumer_groups,
        hard_max_length=spec.hard_max_length,
        delete_idle_after_ms=int(idle.seconds * 1000) if pattern and idle else None,
    )


def id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


@dataclass
class GroupHold:
    """One group of one RedisStream holding retention back, over the streams of a pass."""

    redis_stream: str
    group: str
    reasons: set[HoldReason] = field(default_factory=set)
    streams: int = 0
    oldest_floor_ms: int | None = None

    def add(self, hold: Hold) -> None:
        self.reasons.add(hold.reason)
        floor_ms = id_ms(hold.floor)
        if self.oldest_floor_ms is None or floor_ms < self.oldest_floor_ms:
            self.oldest_floor_ms = floor_ms

    def age_seconds(self, now_ms: int) -> float | None:
        if self.oldest_floor_ms is None:
            return None
        return max(0.0, round((now_ms - self.oldest_floor_ms) / 1000, 3))

    def describe(self, now_ms: int, spec: RetentionPolicySpec) -> str:
        why = []
        if HoldReason.MAX_AGE in self.reasons and spec.max_age is not None:
            age = self.age_seconds(now_ms)
            why.append(
                f"its oldest unconsumed entry is {_seconds(age)} old (maxAge {spec.max_age})"
            )
        if HoldReason.MAX_LENGTH in self.reasons and spec.max_length is not None:
            why.append(f"streams stay over maxLength {spec.max_length}")
        return (
            f"group {self.group!r} of RedisStream {self.redis_stream!r} holds back "
            f"{self.streams} stream(s): {'; '.join(why) or 'retention'}"
        )


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value >= 3600:
        return f"{value / 3600:.1f}h"
    if value >= 60:
        return f"{value / 60:.1f}m"
    return f"{value:.0f}s"


@dataclass
class PassSummary:
    """A whole pass of a policy over every stream of the RedisStreams that reference it."""

    streams: int = 0
    trimmed: int = 0
    unconsumed_dropped: int = 0
    deleted: list[tuple[str, str]] = field(default_factory=list)
    """(RedisStream, key) of each idle stream deleted."""
    dropped_on: dict[str, int] = field(default_factory=dict)
    """RedisStream -> streams where hardMaxLength dropped unconsumed entries."""
    holds: dict[tuple[str, str], GroupHold] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0

    def add(self, redis_stream: str, outcome: StepOutcome, *, final: bool) -> None:
        """Count one step; ``final``: the stream's last step in this pass (holds are judged
        on it alone, since an earlier step's hold may be lifted by the next one)."""
        self.trimmed += outcome.trimmed
        self.unconsumed_dropped += outcome.unconsumed_dropped
        if outcome.unconsumed_dropped:
            self.dropped_on[redis_stream] = self.dropped_on.get(redis_stream, 0) + 1
        if outcome.deleted:
            self.deleted.append((redis_stream, outcome.key))
        if outcome.problem is not None and len(self.problems) < 5:
            self.problems.append(f"{outcome.key!r}: {outcome.problem}")
        if not final:
            return
        if not outcome.missing and not outcome.deleted and outcome.problem is None:
            self.streams += 1
        seen: set[str] = set()
        for hold in outcome.holds:
            entry = self.holds.setdefault(
                (redis_stream, hold.group), GroupHold(redis_stream, hold.group)
            )
            entry.add(hold)
            if hold.group not in seen:
                entry.streams += 1
                seen.add(hold.group)


@dataclass(frozen=True)
class RetentionBlock:
    """What a ConsumerGroup is told: it holds back a policy on some of its streams."""

    policy: str
    streams: int
    message: str


def group_verdict(block: RetentionBlock | None, policy: str) -> Verdict:
    """The ConsumerGroup's Retention condition."""
    if block is None:
        return Verdict(
            ConditionType.RETENTION,
            ConditionStatus.TRUE,
            Reason.RECONCILED,
            f"retention policy {policy!r} is not held back by this group",
        )
    return Verdict(
        ConditionType.RETENTION,
        ConditionStatus.FALSE,
        Reason.RETENTION_BLOCKED,
        f"{block.message} (retention policy {block.policy!r}): find the stuck or slow "
        "consumer; hardMaxLength, if set, caps the streams regardless",
    )


def group_blocks(
    summary: PassSummary, policy: str, spec: RetentionPolicySpec, now_ms: int
) -> dict[tuple[str, str], RetentionBlock]:
    """(RedisStream, group) -> what that group's ConsumerGroup is told."""
    return {
        key: RetentionBlock(policy, hold.streams, hold.describe(now_ms, spec))
        for key, hold in summary.holds.items()
    }


def policy_verdicts(
    summary: PassSummary, spec: RetentionPolicySpec, redis_streams: Sequence[str], now_ms: int
) -> list[Verdict]:
    """Ready, Retention (blocked or not) and, with a hardMaxLength, UnconsumedDropped."""
    if summary.problems:
        ready = Verdict.not_ready(
            Reason.REDIS_ERROR, f"retention failed on some streams: {'; '.join(summary.problems)}"
        )
    elif not redis_streams:
        ready = Verdict.ready("no RedisStream references this policy")
    else:
        ready = Verdict.ready(
            f"applied to {summary.streams} stream(s) of RedisStream(s) "
            f"{', '.join(sorted(redis_streams))}"
        )
    verdicts = [ready]
    holds = sorted(summary.holds.values(), key=lambda h: (-h.streams, h.redis_stream, h.group))
    if holds:
        shown = "; ".join(h.describe(now_ms, spec) for h in holds[:3])
        more = f"; and {len(holds) - 3} more group(s)" if len(holds) > 3 else ""
        verdicts.append(
            Verdict(
                ConditionType.RETENTION,
                ConditionStatus.FALSE,
                Reason.RETENTION_BLOCKED,
                f"{shown}{more}",
            )
        )
    else:
        verdicts.append(
            Verdict(
                ConditionType.RETENTION,
                ConditionStatus.TRUE,
                Reason.RECONCILED,
                "no group holds retention back",
            )
        )
    if spec.hard_max_length is not None:
        if summary.unconsumed_dropped:
            where = ", ".join(
                f"{n} stream(s) of {name}" for name, n in sorted(summary.dropped_on.items())
            )
            verdicts.append(
                Verdict(
                    ConditionType.UNCONSUMED_DROPPED,
                    ConditionStatus.TRUE,
                    Reason.HARD_MAX_LENGTH,
                    f"hardMaxLength {spec.hard_max_length} dropped {summary.unconsumed_dropped} "
                    f"entries no group had consumed, on {where}: those are lost for the "
                    "groups that held them back",
                )
            )
        else:
            verdicts.append(
                Verdict(
                    ConditionType.UNCONSUMED_DROPPED,
                    ConditionStatus.FALSE,
                    Reason.RECONCILED,
                    f"hardMaxLength {spec.hard_max_length} dropped nothing unconsumed in the last pass",
                )
            )
    return verdicts


def held_groups_status(summary: PassSummary, now_ms: int) -> list[dict[str, object]]:
    """status.blockedGroups: the groups holding back the most streams first."""
    holds = sorted(summary.holds.values(), key=lambda h: (-h.streams, h.redis_stream, h.group))
    return [
        {
            "redisStream": h.redis_stream,
            "group": h.group,
            "streams": h.streams,
            "reasons": sorted(str(r) for r in h.reasons),
            "oldestUnconsumedAgeSeconds": h.age_seconds(now_ms),
        }
        for h in holds[:MAX_LISTED_HOLDS]
    ]


def managed_groups(groups: Iterable[tuple[str, str]]) -> tuple[ManagedGroup, ...]:
    """(group name, start on a stream lacking it) pairs, deduplicated, in a stable order."""
    return tuple(ManagedGroup(name, start) for name, start in sorted(set(groups)))
