"""Status conditions and status patches, as Kubernetes API conventions define them.

Pure: the controller hands in what it found and gets back the status to write, if any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streamherd.api.status import ConditionStatus, ConditionType, Reason


@dataclass(frozen=True)
class Verdict:
    """One condition's value as the controller decided it."""

    type: ConditionType
    status: ConditionStatus
    reason: Reason
    message: str

    @classmethod
    def ready(cls, message: str = "") -> Verdict:
        return cls(ConditionType.READY, ConditionStatus.TRUE, Reason.RECONCILED, message)

    @classmethod
    def not_ready(cls, reason: Reason, message: str) -> Verdict:
        return cls(ConditionType.READY, ConditionStatus.FALSE, reason, message)


MAX_MESSAGE = 4096
"""A condition message's limit (the CRDs' schema: api/status.Condition.message). A longer one
- a spec error quoting a 1 MB value - would make the whole status write fail."""


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message``, cut to ``limit`` characters (saying how much was left out)."""
    if len(message) <= limit:
        return message
    tail = f"... ({len(message) - limit + 64} more characters)"
    return message[: limit - len(tail)] + tail


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_verdicts(
    conditions: list[Mapping[str, Any]] | None,
    verdicts: list[Verdict],
    *,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions after ``verdicts``: lastTransitionTime moves only when a condition's
    status changes; conditions of other types are kept as they are."""
    by_type = {c.get("type"): dict(c) for c in conditions or []}
    now_text = ""
    for verdict in verdicts:
        old = by_type.get(verdict.type)
        since = None
        if old is not None and old.get("status") == verdict.status:
            since = old.get("lastTransitionTime")
        if since is None:  # formatted only when needed: this runs at every poll of every loop
            since = now_text = now_text or timestamp(now)
        by_type[verdict.type] = {
            "type": str(verdict.type),
            "status": str(verdict.status),
            "reason": str(verdict.reason),
            "message": bounded(verdict.message),
            "lastTransitionTime": since,
            "observedGeneration": generation,
        }
    return sorted(
        by_type.values(), key=lambda c: (c["type"] != ConditionType.READY, str(c["type"]))
    )


def drop_condition(conditions: list[dict[str, Any]], type_: ConditionType) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("type") != type_]


def condition(status: Mapping[str, Any] | None, type_: ConditionType) -> Mapping[str, Any] | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def transition(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    type_: ConditionType = ConditionType.READY,
) -> Mapping[str, Any] | None:
    """The new condition when ``type_`` changed status or reason (worth an Event), else None."""
    old, new = condition(before, type_), condition(after, type_)
    if new is None:
        return None
    if old is None or (old.get("status"), old.get("reason")) != (
        new.get("status"),
        new.get("reason"),
    ):
        return new
    return None


def status_patch(
    current: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The merge-patch turning ``current`` into ``desired``, or None when nothing changed:
    the operator writes status only when it changed. ``desired`` names every field the
    caller owns; None there means "absent" (and removes it). Other fields are left alone."""
    current = current or {}
    patch = {key: value for key, value in desired.items() if current.get(key) != value}
    return patch or None
