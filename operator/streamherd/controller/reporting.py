"""Writing what a loop decided: status (only when changed), Events (only on transitions)."""

from __future__ import annotations

import logging
import random
import time
import weakref
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from streamherd.api.status import ConditionStatus, ConditionType
from streamherd.controller.apifailures import api_problem
from streamherd.decisions.conditions import (
    Verdict,
    apply_verdicts,
    bounded,
    drop_condition,
    status_patch,
    timestamp,
    transition,
)
from streamherd.kube import Forbidden, KubeClient, KubeError
from streamherd.kube import requests as rq

logger = logging.getLogger(__name__)


def involved(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion")},
    }


class StatusBudget:
    """The operator's budget for status writes of numbers alone: ``per_second`` over all the
    writers that share it (0: none). Each writer's numbers interval stretches to
    ``writers / per_second`` when that is longer than its own: 500 busy groups at a budget of
    10/s write their numbers every ~50 s each, evenly (each its own phase), not 50 a second
    at the 10 s interval, and no group starves. Conditions and scale actions never take from
    it (they are written at once). Counted by the writers alive (a weak set: a loop that
    ends takes its writer with it)."""

    def __init__(self, per_second: float = 0.0) -> None:
        self.per_second = per_second
        self._writers: weakref.WeakSet[StatusWriter] = weakref.WeakSet()

    def join(self, writer: StatusWriter) -> None:
        self._writers.add(writer)

    def spacing(self) -> float:
        """Seconds between one writer's numbers writes that keep the total within budget."""
        return len(self._writers) / self.per_second if self.per_second > 0 else 0.0


class StatusWriter:
    """Owns one resource's status: the write budget of one object. A change of conditions,
    observedGeneration or an ``immediate`` field (a group's replicas and scale actions) is
    written at once; a change of plain numbers only, at most every ``numbers_every`` seconds
    (--status-interval: a busy stream changes every poll, and every write is an etcd write
    that every watcher receives). Condition messages carry no live numbers (the loops keep
    them out), so conditions change only when something happens. Numbers held back are not
    lost: the next call (the next poll) writes them once their time has come. Each writer's
    interval is shortened by a random tenth, so writers started together drift apart rather
    than all writing in the same second; a shared ``budget`` stretches it when many writers
    would exceed the operator's total (StatusBudget). ``heartbeat`` (a timestamp field) is refreshed with
    any write, and on its own after ``heartbeat_every`` seconds."""

    def __init__(
        self,
        kube: KubeClient,
        resource: rq.Resource,
        body: Mapping[str, Any],
        *,
        numbers_every: float = 1.0,
        immediate: Collection[str] = (),
        budget: StatusBudget | None = None,
        heartbeat: str | None = None,
        heartbeat_every: float = 60.0,
    ) -> None:
        self._kube = kube
        self._resource = resource
        self._body = body
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.numbers_every = numbers_every
        self._immediate = frozenset(("conditions", "observedGeneration", *immediate))
        self._budget = budget
        if budget is not None:
            budget.join(self)
        self._heartbeat = heartbeat
        self._heartbeat_every = heartbeat_every
        self._last_write = 0.0
        self._last_heartbeat = 0.0
        self._next_numbers = 0.0
        self.writes = 0
        """Status PATCHes sent (tests, benchmarks)."""
        self.event_refused: Verdict | None = None
        """ApiAccess=False while Events are forbidden (until one is posted again)."""

    async def write(self, desired: Mapping[str, Any]) -> dict[str, Any] | None:
        """Write what differs from the current status; returns the patch written, if any.
        Posts an Event when the Ready condition changes status or reason."""
        now = time.monotonic()
        patch = status_patch(self.current, desired)
        structural = patch is not None and not self._immediate.isdisjoint(patch)
        if patch is not None and not structural and now < self._next_numbers:
            patch = None  # numbers only, and written recently: a later poll writes them
        if self._heartbeat and (
            patch is not None or now - self._last_heartbeat >= self._heartbeat_every
        ):
            patch = dict(patch or {})
            patch[self._heartbeat] = timestamp(datetime.now(UTC))
            self._last_heartbeat = now
        if patch is None:
            return None
        meta = self._body.get("metadata", {})
        before = dict(self.current)
        try:
            await self._kube.patch_status(
                self._resource, meta.get("namespace"), meta.get("name"), patch
            )
        except KubeError as exc:  # gone or racing a deletion: the next loop will see it
            logger.warning(
                "status of %s/%s not written: %s", meta.get("namespace"), meta.get("name"), exc
            )
            return None
        self._last_write = now
        spacing = max(self.numbers_every, self._budget.spacing() if self._budget else 0.0)
        self._next_numbers = now + spacing * random.uniform(0.9, 1.0)
        self.writes += 1
        for key, value in patch.items():
            if value is None:
                self.current.pop(key, None)
            else:
                self.current[key] = value
        changed = transition(before, self.current, ConditionType.READY)
        if changed is not None:
            await self.event(
                "Normal" if changed.get("status") == ConditionStatus.TRUE else "Warning",
                str(changed.get("reason")),
                str(changed.get("message") or changed.get("reason")),
            )
        return patch

    def resume_counters(self, totals: dict[str, int], names: Sequence[str]) -> dict[str, int]:
        """Cumulative counters to go on from, in ``totals``: for each name the largest of what
        it holds, what we wrote and what the object says (after a restart; and another writer,
        such as a CronJob run, only ever adds)."""
        status = self._body.get("status") or {}
        for name in names:
            totals[name] = max(
                totals.get(name, 0),
                int(self.current.get(name) or 0),
                int(status.get(name) or 0),
            )
        return totals

    async def event(self, type_: str, reason: str, message: str) -> None:
        try:
            await self._kube.post_event(
                involved(self._body), type_=type_, reason=reason, message=bounded(message)
            )
        except Forbidden as exc:  # a condition says it (report()), not only this line
            logger.warning("event %s not posted: %s", reason, exc)
            self.event_refused = api_problem(
                exc, ConditionType.API_ACCESS, consequence=", so Events about it are not posted"
            )
        except KubeError as exc:
            logger.warning("event %s not posted: %s", reason, exc)
        else:
            self.event_refused = None


OWNED_CONDITIONS = (
    ConditionType.READY,
    ConditionType.PAUSED,
    ConditionType.SCALING_ACTIVE,
    ConditionType.DEAD_LETTERING,
    ConditionType.HEALTHY,
    ConditionType.DURABLE,
    ConditionType.RECOVERY_ISOLATED,
    ConditionType.RETENTION,
    ConditionType.UNCONSUMED_DROPPED,
    ConditionType.TLS_VERIFIED,
    ConditionType.API_ACCESS,
)


async def report(
    writer: StatusWriter,
    verdicts: list[Verdict],
    generation: int | None,
    fields: Mapping[str, Any] | None,
) -> None:
    """Write verdicts (and observed fields) as status. A condition type the loops own lasts
    only while a verdict says it; other types (another writer's) are left alone."""
    if writer.event_refused is not None and not any(
        v.type is ConditionType.API_ACCESS for v in verdicts
    ):
        verdicts = [*verdicts, writer.event_refused]
    conditions = list(writer.current.get("conditions") or [])
    for owned in OWNED_CONDITIONS:
        if not any(v.type is owned for v in verdicts):
            conditions = drop_condition(conditions, owned)
    desired: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": apply_verdicts(
            conditions, verdicts, generation=generation, now=datetime.now(UTC)
        ),
    }
    if fields is not None:
        desired.update(fields)
    await writer.write(desired)
