"""The janitor's decisions, pure: where poison goes, which consumers are dead or may be
removed, who gets claimed work, which streams a pass looks at, and the conditions it leads
to. (The CronJob that runs the janitor in mode CronJob is built in kube/manifests.py.)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.decisions.conditions import Verdict
from streamherd.keys import DEAD_LETTER_SUFFIX, hash_slot, hash_tag
from streamherd.observations import ConsumerState

# ------------------------------------------------------------------ dead-letter stream


def slot(key: str) -> int:
    return hash_slot(key)


@dataclass(frozen=True)
class DeadLetterTarget:
    """Where a stream's poison entries go: ``key``, or nowhere with ``problem`` saying why
    (then they stay pending)."""

    key: str | None
    problem: str | None = None


def dead_letter_target(stream: str, configured: str | None, *, cluster: bool) -> DeadLetterTarget:
    """The dead-letter stream of ``stream``. Default "<key>:dlq"; on a cluster, a key without
    a hash tag gets "{<key>}:dlq" so both hash to one slot (a script may only touch keys of
    one slot). A configured key in another slot is refused rather than half-working."""
    if configured is not None:
        if cluster and slot(configured) != slot(stream):
            return DeadLetterTarget(
                None,
                f"dead-letter stream {configured!r} is in Redis Cluster hash slot "
                f"{slot(configured)}, stream {stream!r} in slot {slot(stream)}: one script "
                "cannot move an entry between them. Poison entries stay pending; unset "
                f"deadLetter.stream (default {default_dead_letter_key(stream, cluster=True)!r})"
                " or use a key with the same hash tag",
            )
        return DeadLetterTarget(configured)
    default = default_dead_letter_key(stream, cluster=cluster)
    if default is None:
        return DeadLetterTarget(
            None,
            f"stream {stream!r} has no hash tag and contains '}}': no default dead-letter key "
            "shares its Redis Cluster hash slot. Poison entries stay pending; set "
            "deadLetter.stream to a key in its slot",
        )
    return DeadLetterTarget(default)


def default_dead_letter_key(stream: str, *, cluster: bool) -> str | None:
    """The default dead-letter key: "<key>:dlq", or on a cluster "{<key>}:dlq" for a key
    without a hash tag; None when no such key shares the stream's slot (a key with "}" and
    no hash tag)."""
    if not cluster or hash_tag(stream) is not None:
        return stream + DEAD_LETTER_SUFFIX
    candidate = "{" + stream + "}" + DEAD_LETTER_SUFFIX
    return candidate if slot(candidate) == slot(stream) else None


@dataclass(frozen=True)
class RecoveryFindings:
    """What the janitor's last pass found that only Redis can tell, for the conditions the
    group loop writes (one writer of conditions per resource)."""

    unusable_dead_letters: Mapping[str, str] = field(default_factory=dict)
    """Dead-letter key -> its type, where that key exists and is not a stream."""
    held: int = 0
    """Entries held pending for want of a usable dead-letter stream."""


def dead_lettering(
    keys: Sequence[str],
    *,
    single_key: str | None,
    configured: str | None,
    cluster: bool,
    findings: RecoveryFindings | None = None,
) -> Verdict:
    """The DeadLettering condition: whether poison entries can be moved to a dead-letter
    stream. Refused for a configured key in another Redis Cluster hash slot (known from the
    spec) or a dead-letter key that holds something else than a stream (known from the
    janitor's last pass)."""
    for key in keys:
        target = dead_letter_target(key, configured, cluster=cluster)
        if target.problem is not None:
            return Verdict(
                ConditionType.DEAD_LETTERING,
                ConditionStatus.FALSE,
                Reason.CROSS_SLOT,
                target.problem,
            )
    unusable = dict(findings.unusable_dead_letters) if findings else {}
    if unusable:
        shown = ", ".join(f"{k!r} is a {t}" for k, t in sorted(unusable.items())[:5])
        more = f" (and {len(unusable) - 5} more)" if len(unusable) > 5 else ""
        held = findings.held if findings else 0
        return Verdict(
            ConditionType.DEAD_LETTERING,
            ConditionStatus.FALSE,
            Reason.WRONG_KEY_TYPE,
            f"dead-letter key {shown}{more}, not a stream: nothing is written there, and "
            f"poison entries stay pending ({held} held); rename or delete that key, or set "
            "deadLetter.stream to a key that is free",
        )
    where = configured or (
        "each stream's own dead-letter stream"
        if single_key is None
        else repr(dead_letter_target(single_key, None, cluster=cluster).key)
    )
    return Verdict(
        ConditionType.DEAD_LETTERING,
        ConditionStatus.TRUE,
        Reason.RECONCILED,
        f"poison entries go to {where}",
    )


# ------------------------------------------------------------------ isolation

SHOWN_GROUPS = 5


def recovery_isolation(
    group: str, *, claim: bool, groups_on_streams: Iterable[Iterable[str]]
) -> Verdict:
    """The RecoveryIsolated condition, from the groups the last poll saw on the group's
    streams (XINFO GROUPS: no extra Redis work). Claim keeps recovered entries in the group's
    own PEL; Requeue appends copies to the stream, which every other group there reads: their
    SDK consumers acknowledge a copy tagged for another group unprocessed, a plain consumer
    processes it, and it counts in those groups' lag until acknowledged. Said before it
    happens: the condition holds as soon as another group is seen, whatever was recovered."""
    if claim:
        return Verdict(
            ConditionType.RECOVERY_ISOLATED,
            ConditionStatus.TRUE,
            Reason.RECONCILED,
            f"strategy Claim: recovered entries stay in group {group!r}'s pending list",
        )
    others = sorted({name for names in groups_on_streams for name in names} - {group})
    if not others:
        return Verdict(
            ConditionType.RECOVERY_ISOLATED,
            ConditionStatus.TRUE,
            Reason.RECONCILED,
            f"strategy Requeue on streams no other group reads: copies reach only {group!r}",
        )
    shown = ", ".join(repr(name) for name in others[:SHOWN_GROUPS])
    if len(others) > SHOWN_GROUPS:
        shown += f" and {len(others) - SHOWN_GROUPS} more"
    return Verdict(
        ConditionType.RECOVERY_ISOLATED,
        ConditionStatus.FALSE,
        Reason.SHARED_STREAM,
        f"strategy Requeue appends recovered entries (copies tagged streamherd-group={group}) "
        f"to streams that groups {shown} read too: their consumers that follow the contract "
        "(the streamherd SDK) acknowledge such copies without processing them, but plain "
        "consumers would process them, and they count in those groups' lag until "
        "acknowledged. To keep recovered work inside this group, use strategy Claim with "
        "consumers that read their own history (the streamherd SDK does)",
    )


# ------------------------------------------------------------------ consumers and pods


TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class PodRecord:
    """What recovery needs of one pod: small, as a kopf index keeps one per pod."""

    name: str
    replicaset: str | None
    """The ReplicaSet that controls it (its controller ownerReference), if any."""
    exists: bool
    """Its process may still run: not Succeeded or Failed (terminating pods may still ack)."""
    live: bool
    """It runs and is not terminating: it may be given work."""


def pod_record(pod: Mapping[str, Any]) -> PodRecord:
    """The one judgement of a pod's liveness (the janitor and the autoscaler share it)."""
    meta = pod.get("metadata") or {}
    exists = (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES
    return PodRecord(
        name=str(meta.get("name")),
        replicaset=controller_of(meta, "ReplicaSet"),
        exists=exists,
        live=exists and not meta.get("deletionTimestamp"),
    )


def controller_of(meta: Mapping[str, Any], kind: str) -> str | None:
    """The name of the object of ``kind`` that controls this one (ownerReferences)."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


@dataclass(frozen=True)
class Pods:
    """The consumer Deployment's pods as the janitor knows them, by identity (owner chain
    Pod -> ReplicaSet -> Deployment), never by the shape of a name."""

    deployment: str
    ours: frozenset[str]
    """Pods of the Deployment that exist now (terminating ones too: they may still ack)."""
    live: frozenset[str]
    """Of those, the ones that run and are not terminating: who can be given work."""
    gone: frozenset[str] = frozenset()
    """Pods seen before as the Deployment's that exist no more: their consumers are dead."""


@dataclass(frozen=True)
class ConsumerPlan:
    """What the janitor does with a group's consumers on one stream."""

    dead: tuple[str, ...] = ()
    """Named after a pod of the Deployment that is gone, with pending entries: recovered at
    once."""
    targets: tuple[str, ...] = ()
    """Who gets claimed entries (strategy Claim), in a stable order."""
    removals: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    """(consumer, min idle ms) to remove if its PEL is empty by then: those whose pods are
    gone, and those idle long enough with nothing pending when their consumers were read."""


def plan_consumers(
    consumers: Sequence[ConsumerState],
    pods: Pods | None,
    *,
    min_idle_ms: int,
    remove_idle_after_ms: int,
) -> ConsumerPlan:
    """Dead consumers, claim targets and removals. ``pods`` None: nobody can say which pods
    exist (no Deployment), so no consumer is dead; claim targets are then the consumers
    that read within ``min_idle_ms``. Otherwise a consumer is dead only if its name was a
    pod of the Deployment that is gone; any other consumer without a pod of ours (a Job's
    pod, another Deployment's, one never seen) waits for ``minIdle`` and, with nothing
    pending, for ``removeIdleConsumersAfter``."""

    def idle_enough(c: ConsumerState) -> bool:
        # Asked of the script only when it may succeed (it checks both again, atomically).
        return c.pending == 0 and c.idle_ms >= remove_idle_after_ms

    if pods is None:
        targets = sorted(c.name for c in consumers if c.idle_ms < min_idle_ms)
        removals = [(c.name, remove_idle_after_ms) for c in consumers if idle_enough(c)]
        return ConsumerPlan(targets=tuple(targets), removals=tuple(removals))
    dead, removals = [], []
    for c in consumers:
        if c.name in pods.ours:
            continue
        if c.name in pods.gone:
            removals.append((c.name, 0))  # its pod is gone: remove once its PEL is empty
            if c.pending > 0:
                dead.append(c.name)
        elif idle_enough(c):
            removals.append((c.name, remove_idle_after_ms))
    return ConsumerPlan(
        dead=tuple(sorted(dead)), targets=tuple(sorted(pods.live)), removals=tuple(removals)
    )


LOOK_AGAIN_AFTER = 60.0
"""Seconds, at least, between two looks at an idle stream's consumers."""


@dataclass(frozen=True)
class ConsumerMemo:
    """What the last look at a stream's consumers (XINFO CONSUMERS) showed: enough to tell
    from the polls alone (which count consumers) that the stream needs no look for now."""

    count: int
    names: frozenset[str]
    due_at: float
    """When a consumer there may have become removable as idle (monotonic seconds)."""

    def without(self, removed: Iterable[str]) -> ConsumerMemo:
        gone = set(removed) & self.names
        return ConsumerMemo(self.count - len(gone), self.names - gone, self.due_at)


def consumer_memo(
    consumers: Sequence[ConsumerState],
    pods: Pods | None,
    *,
    now: float,
    remove_idle_after_ms: int,
) -> ConsumerMemo:
    """The memo of a look: the next is due when the first consumer that may be removed as
    idle (no pod of ours) gets idle enough, if it does not read in the meantime; consumers of
    live pods never are (their pods going away is what makes them removable)."""
    ours = pods.ours if pods is not None else frozenset()
    waits = [
        max(0, remove_idle_after_ms - c.idle_ms) / 1000
        for c in consumers
        if c.name not in ours and c.pending == 0
    ]
    wait = min(waits) if waits else remove_idle_after_ms / 1000
    return ConsumerMemo(
        len(consumers), frozenset(c.name for c in consumers), now + max(LOOK_AGAIN_AFTER, wait)
    )


def needs_look(memo: ConsumerMemo | None, consumers: int, gone: frozenset[str], now: float) -> bool:
    """Whether a stream where the group has nothing pending needs its consumers read: never
    looked at (and it has some), their number changed since, one is the name of a pod that is
    gone (to be removed), or one may have become removable as idle."""
    if memo is None:
        return consumers > 0
    return consumers != memo.count or bool(memo.names & gone) or now >= memo.due_at


def next_offset(offset: int, claimed: int, targets: int) -> int:
    """The round-robin position after ``claimed`` entries went to ``targets`` consumers."""
    return (offset + claimed) % targets if targets else 0
