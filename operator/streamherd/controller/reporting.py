"""Writing what a loop decided: status (only when changed), Events (only on transitions),
handed to the client's write queue (never awaited behind other objects' writes)."""

from __future__ import annotations

import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
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
from streamherd.kube import Forbidden, KubeClient, KubeError, Priority
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
    at the 10 s interval, and no group starves (the queue sends the longest-waiting first).
    Conditions and scale actions never take from it (they are written at once). Counted by
    the writers alive (a weak set: a loop that ends takes its writer with it).

    The effective interval is said, not hidden: ``on_interval`` (the operator's metric
    ``streamherd_status_interval_seconds``) is told it, and a log line when it changes by
    more than a tenth, so that numbers older than --status-interval are expected, and
    numbers older than twice the effective interval mean something is wrong."""

    def __init__(self, per_second: float = 0.0, interval: float = 0.0) -> None:
        self.per_second = per_second
        self.interval = interval
        """The --status-interval, for the effective interval reported."""
        self._writers: weakref.WeakSet[StatusWriter] = weakref.WeakSet()
        self.on_interval: Callable[[float], None] | None = None
        self._said = 0.0

    def join(self, writer: StatusWriter) -> None:
        self._writers.add(writer)
        self.effective(writer.numbers_every)

    def spacing(self) -> float:
        """Seconds between one writer's numbers writes that keep the total within budget."""
        return len(self._writers) / self.per_second if self.per_second > 0 else 0.0

    def effective(self, own: float) -> float:
        """A writer's numbers interval: its own, or longer to stay within the budget."""
        interval = max(own, self.spacing())
        said = max(self.interval, self.spacing())
        if self.on_interval is not None:
            self.on_interval(said)
        if abs(said - self._said) > 0.1 * max(self._said, 1e-9):
            self._said = said
            if said > self.interval > 0:
                logger.info(
                    "status numbers of %d resources are refreshed every %.1fs, not every "
                    "%.1fs (--status-interval): --status-writes-per-second is %g",
                    len(self._writers),
                    said,
                    self.interval,
                    self.per_second,
                )
        return interval


class StatusWriter:
    """Owns one resource's status: the write budget of one object. A change of conditions,
    observedGeneration or an ``immediate`` field (a group's replicas and scale actions) is
    queued at once (Priority.STATUS); a change of plain numbers only, at most every
    ``numbers_every`` seconds (--status-interval: a busy stream changes every poll, and every
    write is an etcd write that every watcher receives), at Priority.NUMBERS. Condition
    messages carry no live numbers (the loops keep them out), so conditions change only when
    something happens. Numbers held back are not lost: the next call (the next poll) queues
    them once their time has come. Each writer's interval is shortened by a random tenth, so
    writers started together drift apart rather than all writing in the same second; a
    shared ``budget`` stretches it when many writers would exceed the operator's total
    (StatusBudget). ``heartbeat`` (a timestamp field) is refreshed with any write, and on
    its own after ``heartbeat_every`` seconds, stretched by the budget the same way.

    No loop waits for its writes: ``write`` and ``event`` hand them to the client's queue
    (``kube.queue``), one slot per writer, and return. What keeps it consistent: ``current``
    is what the loops decided (what ``report`` builds the next conditions on), ``written``
    what the API server acknowledged; a send writes the difference between them as it is
    when the sender gets to it, so a newer status replaces an unsent one. A failed send
    (409, 5xx given up, 403) leaves ``written`` as it was and the next ``write`` queues the
    difference again; a 404 (the object deleted meanwhile) gives up until the object's loop
    writes again (it ends, or the object was re-created). The Ready Event of a transition is
    posted once the transition is written.

    ``written`` follows the object as the (live) body shows it, not only what our sends were
    acknowledged: another writer (a stale operator instance, a script, ``kubectl patch
    --subresource=status``) that overwrote one of our fields makes a difference again, and
    the next ``write`` queues it: never left standing because "we wrote that already". The
    watch that feeds the body lags our own sends: while it shows a resourceVersion it had
    when we sent, or one of our own earlier writes, it is older than ``written``, which is
    kept; any other version is at least as new, and is adopted for our fields (at worst one
    duplicate write)."""

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
        heartbeat_budget: StatusBudget | None = None,
    ) -> None:
        self._kube = kube
        self._resource = resource
        self._body = body
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.written: dict[str, Any] = dict(self.current)
        self.numbers_every = numbers_every
        self._immediate = frozenset(("conditions", "observedGeneration", *immediate))
        self._budget = budget
        if budget is not None:
            budget.join(self)
        self._heartbeat = heartbeat
        self._heartbeat_every = heartbeat_every
        self._heartbeat_budget = heartbeat_budget or budget
        if heartbeat_budget is not None and heartbeat_budget is not budget:
            heartbeat_budget.join(self)  # its heartbeats count among the budget's writers
        self._last_heartbeat = 0.0
        self._next_numbers = 0.0
        self._heartbeat_due = False
        self._events = itertools.count()
        self.writes = 0
        """Status PATCHes sent (tests, benchmarks)."""
        self.event_refused: Verdict | None = None
        """ApiAccess=False while Events are forbidden (until one is posted again)."""
        self._owned: set[str] = set()
        """The fields this writer has been asked to write (or remove). An object has several
        writers (a group's loop, its CronJob record, its janitor), each starting from the
        status as it was: catching up on any other field would make another writer's newer
        value a difference, and this writer would send its stale copy back."""
        self._stale_versions: set[str] = set()
        """resourceVersions of the body older than ``written`` (see the class)."""
        self._written_version: str | None = None
        """The resourceVersion our last send made."""
        self._caught_up_at: str | None = None
        """The body's resourceVersion ``catch_up`` last adopted: the same version again holds
        nothing new (our sends since then marked it stale), so it is not compared again."""
        self._settled = False
        """``written`` held all of ``current`` at the last ``write`` and neither has changed
        since: the next ``write`` with nothing new has nothing to compare (thousands of
        loops call ``write`` at every poll, and most polls change nothing to write)."""

    def catch_up(self) -> None:
        """Take ``written`` (for our fields) from the body when it is not older than it."""
        version = self._body.get("metadata", {}).get("resourceVersion")
        if version is None or version in self._stale_versions or version == self._caught_up_at:
            return
        self._caught_up_at = version
        self._settled = False
        status = self._body.get("status")
        status = status if isinstance(status, Mapping) else {}
        before = {key: self.written.get(key) for key in self._owned}
        for key in self._owned:  # never another writer's field: ours are what we wrote
            if key in status:
                self.written[key] = status[key]
            else:
                self.written.pop(key, None)
        self._stale_versions.clear()
        changed = sorted(k for k in self._owned if self.written.get(k) != before[k])
        if changed:
            meta = self._body.get("metadata", {})
            logger.debug(
                "status of %s/%s at version %s differs from what we wrote: %s",
                meta.get("namespace"),
                meta.get("name"),
                version,
                ", ".join(changed),
            )

    def _sent(self, sent_at: str | None, reply: Mapping[str, Any] | None) -> None:
        """Remember which body versions are older than the send just acknowledged."""
        if len(self._stale_versions) > 1000:  # a watch that never catches up: adopt
            self._stale_versions.clear()
        if sent_at is not None:
            self._stale_versions.add(sent_at)
        if self._written_version is not None:
            self._stale_versions.add(self._written_version)
        meta = (reply or {}).get("metadata") or {}
        self._written_version = meta.get("resourceVersion")

    def _outstanding(self) -> dict[str, Any] | None:
        """The patch from ``written`` to ``current``: changed fields, and None for each field
        of ours removed from ``current`` (only ours: the heartbeat, say, is in ``written``
        alone, and other writers' fields are never removed here)."""
        patch = dict(status_patch(self.written, self.current) or {})
        removed = (k for k in self._owned if k in self.written and k not in self.current)
        patch.update(dict.fromkeys(removed))
        return patch or None

    def _structural(self, patch: Mapping[str, Any] | None) -> bool:
        return patch is not None and not self._immediate.isdisjoint(patch)

    def _heartbeat_spacing(self) -> float:
        """Seconds between heartbeats written on their own: ``heartbeat_every``, stretched
        like the numbers by the shared budget (``heartbeat_budget``, else the numbers' one):
        2,000 RedisStreams' and 2,000 janitors' heartbeats at one a minute each would be 66
        writes a second, four times the whole write budget."""
        budget = self._heartbeat_budget
        return max(self._heartbeat_every, budget.spacing() if budget is not None else 0.0)

    def _interval(self) -> float:
        if self._budget is None:
            return self.numbers_every
        return self._budget.effective(self.numbers_every)

    async def write(self, desired: Mapping[str, Any]) -> dict[str, Any] | None:
        """Queue what differs from the current status; returns that patch, if any (written
        soon, by the queue). Posts an Event when the Ready condition changes status or
        reason (once written)."""
        now = time.monotonic()
        if not self._owned.issuperset(desired):
            self._owned.update(desired)
            self._caught_up_at = None  # a field newly ours: catch up on it too
        patch = status_patch(self.current, desired)
        structural = self._structural(patch)
        if patch is not None and not structural and now < self._next_numbers:
            patch = None  # numbers only, and written recently: a later poll writes them
        if patch is not None:
            self._settled = False
            for key, value in patch.items():
                if value is None:
                    self.current.pop(key, None)
                else:
                    self.current[key] = value
        if self._heartbeat and now - self._last_heartbeat >= self._heartbeat_spacing():
            self._heartbeat_due = True
        self.catch_up()
        if self._settled and not self._heartbeat_due:
            return patch
        outstanding = self._outstanding()
        self._settled = outstanding is None
        if outstanding is not None or self._heartbeat_due:
            priority = Priority.STATUS if self._structural(outstanding) else Priority.NUMBERS
            self._kube.queue.put(self, priority, self._flush)
        return patch

    async def _flush(self) -> None:
        """Send what ``written`` lacks of ``current`` (called by the queue's sender)."""
        patch = self._outstanding()
        if patch is None and not self._heartbeat_due:
            return
        now = time.monotonic()
        patch = dict(patch or {})
        if self._heartbeat:
            patch[self._heartbeat] = timestamp(datetime.now(UTC))
        structural = self._structural(patch)
        meta = self._body.get("metadata", {})
        sent_at = meta.get("resourceVersion")
        try:
            reply = await self._kube.patch_status(
                self._resource,
                meta.get("namespace"),
                meta.get("name"),
                patch,
                priority=Priority.STATUS if structural else Priority.NUMBERS,
            )
        except KubeError as exc:  # gone or racing a deletion: the next loop will see it
            logger.warning(
                "status of %s/%s not written: %s", meta.get("namespace"), meta.get("name"), exc
            )
            return
        self._sent(sent_at, reply)
        self._heartbeat_due = False
        if self._heartbeat:
            self._last_heartbeat = now
        self._next_numbers = now + self._interval() * random.uniform(0.9, 1.0)
        self.writes += 1
        self._settled = False
        before = dict(self.written)
        for key, value in patch.items():
            if value is None:
                self.written.pop(key, None)
            else:
                self.written[key] = value
        changed = transition(before, self.written, ConditionType.READY)
        if changed is not None:
            await self.event(
                "Normal" if changed.get("status") == ConditionStatus.TRUE else "Warning",
                str(changed.get("reason")),
                str(changed.get("message") or changed.get("reason")),
            )

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
        """Queue an Event (Priority.EVENT); each its own slot, in order of queueing."""

        async def post() -> None:
            await self._post_event(type_, reason, message)

        self._kube.queue.put(("event", id(self), next(self._events)), Priority.EVENT, post)

    async def _post_event(self, type_: str, reason: str, message: str) -> None:
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
