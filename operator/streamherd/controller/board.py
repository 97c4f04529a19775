"""What the loops share about retention: the groups that hold it back (the RetentionBoard),
and what kopf's indexes say (which groups a RedisStream carries, which policies exist)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.decisions.conditions import Verdict
from streamherd.decisions.retention import RetentionBlock

Index = Mapping[tuple[str, str], Collection[Any]]
"""A kopf index (or any mapping like it): key -> the values every object gave for it."""


@dataclass
class _Findings:
    at: float
    stale_after: float
    blocks: dict[tuple[str, str], RetentionBlock]


class RetentionBoard:
    """Which groups hold retention back, as each RetentionPolicy's last complete pass found.

    What keeps it consistent: each policy's loop is the only writer of its own entry; it
    replaces the entry whole after every complete pass and removes it when the loop ends
    (policy deleted or paused, operator stopping). ConsumerGroup loops only read. Everything
    in it is derived from Redis alone, so after a restart, a re-list or a failover to another
    replica it is rebuilt by each policy's next pass; until then a group says nothing about
    retention (unknown is not "fine"). Findings older than three intervals (a loop that
    hangs) count as absent."""

    def __init__(self) -> None:
        self._findings: dict[tuple[str, str], _Findings] = {}

    def publish(
        self,
        namespace: str,
        policy: str,
        blocks: Mapping[tuple[str, str], RetentionBlock],
        interval: float,
    ) -> None:
        self._findings[(namespace, policy)] = _Findings(
            time.monotonic(), 3 * interval + 30, dict(blocks)
        )

    def withdraw(self, namespace: str, policy: str) -> None:
        self._findings.pop((namespace, policy), None)

    def _fresh(self, namespace: str, policy: str) -> _Findings | None:
        found = self._findings.get((namespace, policy))
        if found is None or time.monotonic() - found.at > found.stale_after:
            return None
        return found

    def known(self, namespace: str, policy: str) -> bool:
        """Whether the policy has findings (a recent complete pass)."""
        return self._fresh(namespace, policy) is not None

    def block(
        self, namespace: str, policy: str, redis_stream: str, group: str
    ) -> RetentionBlock | None:
        found = self._fresh(namespace, policy)
        return None if found is None else found.blocks.get((redis_stream, group))


def index_group(namespace: str, name: str, body: Mapping[str, Any]) -> dict[Any, Any]:
    """The kopf index of ConsumerGroups by the RedisStream they reference: (namespace,
    RedisStream) -> (group, startId, creationTimestamp). Retention protects a managed group's
    start on streams that lack it so far; Delete removes only keys carrying one of them.
    Read leniently, on purpose: a group whose spec is invalid elsewhere (its loop says so)
    still exists in Redis and keeps retention from trimming what it has not read. Only what
    cannot name a stream at all (a spec or streamRef that is not an object) is left out."""
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return {}
    ref = spec.get("streamRef")
    stream = ref.get("name") if isinstance(ref, Mapping) else None
    if not stream or not isinstance(stream, str):
        return {}
    created = (body.get("metadata") or {}).get("creationTimestamp") or ""
    group = spec.get("groupName") or name
    return {(namespace, stream): (str(group), str(spec.get("startId") or "$"), str(created))}


def stream_groups(index: Index, namespace: str, redis_stream: str) -> list[tuple[str, str, str]]:
    """(group, startId, created) of every ConsumerGroup on a RedisStream."""
    return sorted(index.get((namespace, redis_stream), ()))


def managed_group_names(
    index: Index, namespace: str, redis_stream: str, recorded: Collection[str] = ()
) -> list[str]:
    """Groups of ours on a RedisStream's keys: those of its ConsumerGroups now, and those its
    status recorded (ConsumerGroups deleted before it, whose groups may remain)."""
    now = {group for group, _, _ in stream_groups(index, namespace, redis_stream)}
    return sorted(now | set(recorded))


def stream_verdict(policies: Index, namespace: str, policy: str | None) -> Verdict | None:
    """A RedisStream's Retention condition: False PolicyNotFound when its policy is missing."""
    if policy is None:
        return None
    if (namespace, policy) not in policies:
        return Verdict(
            ConditionType.RETENTION,
            ConditionStatus.FALSE,
            Reason.POLICY_NOT_FOUND,
            f"RetentionPolicy {policy!r} not found in namespace {namespace!r}: create it, or "
            "fix spec.retentionPolicyRef (until then nothing is trimmed)",
        )
    return Verdict(
        ConditionType.RETENTION,
        ConditionStatus.TRUE,
        Reason.RECONCILED,
        f"retention policy {policy!r} applies",
    )
