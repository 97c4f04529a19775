"""The janitor: recover stranded work, dead-letter poison messages, remove dead consumers.

One janitor per ConsumerGroup. In mode Operator a loop here runs a bounded pass every
``recovery.interval``; in mode CronJob the loop keeps a CronJob whose pod runs
``streamherd janitor`` (``run_command`` below), which runs the very same pass once.
A pass, per stream of the group:
  1. read the group's consumers, then the Deployment's pods (in that order: a consumer seen
     then belongs to a pod in the list, unless that pod is gone);
  2. recover every entry of each dead consumer (named after a pod that no longer exists) at
     once, then remove the consumers whose pods are gone once their PEL is empty, and idle
     ones without a pod after ``removeIdleConsumersAfter``;
  3. scan the PEL for stale entries (idle >= minIdle) from where the last pass stopped.
Work stops at ``timeBudget`` (checked between batches of ``batchSize``); the next pass goes on
from the cursor it left.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamherd import __version__
from streamherd.api import SpecError, is_paused, parse
from streamherd.api.consumergroup import (
    ConsumerGroupSpec,
    JanitorMode,
    Recovery,
    RecoveryStrategy,
)
from streamherd.api.redisstream import RedisStreamSpec
from streamherd.api.status import ConditionType, Reason
from streamherd.controller.consumers import (
    PodHistory,
    PodIndex,
    PodTracker,
    deployment_name,
    listed_pod_index,
)
from streamherd.controller.context import Context, SecretCache
from streamherd.controller.groups import claim_target, who
from streamherd.controller.reporting import StatusWriter
from streamherd.controller.waiting import Stopped, sleep
from streamherd.decisions.conditions import condition
from streamherd.decisions.recovery import (
    Pods,
    RecoveryFindings,
    cron_job_patch,
    dead_letter_target,
    desired_cron_job,
    next_offset,
    owned_by,
    plan_consumers,
)
from streamherd.gateway import GatewayError, RedisGateway, ScanState, SecretMissing
from streamherd.gateway import recovery as redis_recovery
from streamherd.gateway.recovery import RecoverySettings, Strategy
from streamherd.kube import KubeClient, KubeError, NotFound
from streamherd.kube import requests as rq
from streamherd.metrics import Metrics

logger = logging.getLogger(__name__)

WAIT_SECONDS = 1.0
"""Waiting on the group loop (its claim) or the RedisStream loop: an in-memory check."""
RETRY_SECONDS = 2.0
MORE_WORK_SECONDS = 1.0
"""A pass that ran out of time budget continues this soon (or at the interval, if shorter)."""
IDLE_SECONDS = 60.0
"""Nothing to do (paused, disabled, mode CronJob, an invalid spec): look again this often,
or as soon as the spec or the paused annotation changes."""
STATUS_FIELDS = ("recovered", "deadLettered", "consumersRemoved")
HEARTBEAT_FIELD = "lastJanitorRun"
HEARTBEAT_SECONDS = 60.0
DEFAULT_IMAGE = f"ghcr.io/streamherd/streamherd:{__version__}"
DEFAULT_SERVICE_ACCOUNT = "streamherd-janitor"

PodsReader = Callable[[], Awaitable[Pods | None]]


@dataclass
class Progress:
    """What a janitor remembers between passes: where each stream's stale scan stopped,
    the round-robin position, and which stream goes first next time."""

    cursors: dict[str, str] = field(default_factory=dict)
    offset: int = 0
    first_key: int = 0


@dataclass
class Outcome:
    """One pass, summed over its streams."""

    keys: int = 0
    """Streams the group exists on (the others were skipped)."""
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

    def add(
        self, batch: redis_recovery.Batch, *, dead_letter: str | None, count_held: bool
    ) -> None:
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
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """One bounded janitor pass over ``keys``; raises GatewayError when Redis fails."""
    started = clock()
    deadline = started + recovery.time_budget.seconds
    settings = settings_of(recovery)
    min_idle_ms = int(recovery.min_idle.seconds * 1000)
    outcome = Outcome()
    listed = await redis_recovery.consumers(gateway, keys, group)
    present = [key for key in keys if isinstance(listed[key], list)]
    outcome.keys = len(present)
    if not present:
        outcome.seconds = clock() - started
        return outcome
    view = await pods()  # after the consumers: see the module's docstring
    plans, dead_letters = {}, {}
    for key in present:
        found = listed[key]
        assert isinstance(found, list)
        plans[key] = plan_consumers(
            found,
            view,
            min_idle_ms=min_idle_ms,
            remove_idle_after_ms=int(recovery.remove_idle_consumers_after.seconds * 1000),
        )
        target = dead_letter_target(
            key, recovery.dead_letter.stream, cluster=gateway.endpoint.cluster
        )
        dead_letters[key] = target.key
        if target.problem is not None:
            outcome.refused[key] = target.problem
    first = progress.first_key % len(present)
    order = present[first:] + present[:first]

    async def drain(key: str, *, consumer: str | None, start: str, idle_ms: int) -> str | None:
        """Batches until the end of what is examined, or the deadline: where it stopped."""
        plan = plans[key]
        position: str | None = start
        while position is not None:
            if clock() >= deadline:
                outcome.complete = False
                return position
            batch = await redis_recovery.recover(
                gateway,
                key,
                group,
                settings,
                dead_letter=dead_letters[key],
                start=position,
                consumer=consumer,
                min_idle_ms=idle_ms,
                targets=plan.targets,
                offset=progress.offset,
            )
            outcome.add(batch, dead_letter=dead_letters[key], count_held=consumer is None)
            progress.offset = next_offset(progress.offset, batch.claimed, len(plan.targets))
            position = batch.next_start
        return None

    for index, key in enumerate(order):
        for consumer in plans[key].dead:
            await drain(key, consumer=consumer, start="-", idle_ms=0)
        if not outcome.complete:
            progress.first_key = first + index
            break
    removed = await redis_recovery.remove_consumers(
        gateway, {key: plans[key].removals for key in present}, group
    )
    outcome.removed = [name for key in present for name in removed.get(key, ())]
    if outcome.complete:
        for index, key in enumerate(order):
            stopped_at = await drain(
                key, consumer=None, start=progress.cursors.get(key, "-"), idle_ms=min_idle_ms
            )
            if stopped_at is None:
                progress.cursors.pop(key, None)
            else:
                progress.cursors[key] = stopped_at
                progress.first_key = first + index
                break
    for key in [k for k in progress.cursors if k not in listed]:
        del progress.cursors[key]  # a stream of the pattern that went away
    outcome.seconds = clock() - started
    return outcome


def tracked_pods(tracker: PodTracker | None) -> PodsReader:
    """The pods of a pass, from a tracker (None: the group names no Deployment)."""

    async def read() -> Pods | None:
        return None if tracker is None else tracker.view()

    return read


async def listed_pods(
    kube: KubeClient, namespace: str, name: str, spec: ConsumerGroupSpec
) -> PodsReader:
    """For a one-shot run (`streamherd janitor`): the pods as one LIST shows them. Nothing was
    seen before, so no consumer is dead: stale entries wait for minIdle."""
    deployment = deployment_name(name, spec)
    index = None
    if deployment is not None:
        try:
            index = await listed_pod_index(kube, namespace, deployment)
        except KubeError as exc:
            logger.warning("pods of Deployment %s/%s not read: %s", namespace, deployment, exc)
    tracker = None
    if deployment is not None and index is not None:
        tracker = PodTracker(index, PodHistory(), namespace, deployment)
    return tracked_pods(tracker)


class Janitor:
    """Runs passes for one ConsumerGroup and reports them: status counters, Events,
    Prometheus counters. Used by the operator's loop and by `streamherd janitor` alike."""

    def __init__(self, kube: KubeClient, metrics: Metrics, body: Mapping[str, Any]) -> None:
        self.body = body
        meta = body["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.writer = StatusWriter(
            kube,
            rq.CONSUMER_GROUPS,
            body,
            numbers_every=0,  # counters are cumulative: a skipped write would lose a delta
            heartbeat=HEARTBEAT_FIELD,
            heartbeat_every=HEARTBEAT_SECONDS,
        )
        self.metrics = metrics
        self.progress = Progress()
        self.totals: dict[str, int] = {}
        self.announced: dict[str, str] = {}

    async def run(
        self,
        gateway: RedisGateway,
        keys: Sequence[str],
        group: str,
        recovery: Recovery,
        pods: PodsReader,
    ) -> Outcome:
        labels = (self.namespace, self.name, group)
        try:
            outcome = await run_pass(
                gateway, keys, group, recovery, pods=pods, progress=self.progress
            )
        except GatewayError:
            self.metrics.janitor_runs.labels(*labels, "error").inc()
            raise
        m = self.metrics
        m.janitor_runs.labels(*labels, "complete" if outcome.complete else "partial").inc()
        m.janitor_duration.labels(*labels).observe(outcome.seconds)
        m.janitor_recovered.labels(*labels, "requeue").inc(outcome.requeued)
        m.janitor_recovered.labels(*labels, "claim").inc(outcome.claimed)
        m.janitor_dead_lettered.labels(*labels).inc(outcome.dead_lettered)
        m.janitor_dropped.labels(*labels).inc(outcome.dropped)
        m.janitor_consumers_removed.labels(*labels).inc(len(outcome.removed))
        m.janitor_poison_held.labels(*labels).set(outcome.held)
        blocked = outcome.refused or outcome.unusable
        m.janitor_dead_letter_blocked.labels(*labels).set(1 if blocked else 0)
        await self.report(outcome, recovery)
        return outcome

    async def report(self, outcome: Outcome, recovery: Recovery) -> None:
        status = self.body.get("status") or {}
        for name in STATUS_FIELDS:
            # The larger of what we wrote and what the object says: another writer (a
            # CronJob run before a switch of mode) only ever adds.
            self.totals[name] = max(
                self.totals.get(name, 0),
                int(self.writer.current.get(name) or 0),
                int(status.get(name) or 0),
            )
        self.totals["recovered"] += outcome.recovered
        self.totals["deadLettered"] += outcome.dead_lettered
        self.totals["consumersRemoved"] += len(outcome.removed)
        await self.writer.write(dict(self.totals))
        if outcome.dead_lettered:
            await self.writer.event(
                "Warning",
                "DeadLettered",
                f"{outcome.dead_lettered} poison entries (delivered {recovery.max_deliveries}"
                f" times or more) moved to {', '.join(sorted(outcome.dead_letter_keys))}",
            )
        problems = {key: (Reason.CROSS_SLOT, text) for key, text in outcome.refused.items()}
        for dead_letter, kind in outcome.unusable.items():
            problems[dead_letter] = (
                Reason.WRONG_KEY_TYPE,
                f"dead-letter key {dead_letter!r} is a {kind}, not a stream: poison entries "
                "stay pending; rename or delete that key, or set deadLetter.stream",
            )
        for key, (reason, problem) in problems.items():
            if self.announced.get(key) != problem:
                await self.writer.event("Warning", str(reason), problem)
        self.announced = {key: problem for key, (_, problem) in problems.items()}
        if outcome.failed:
            logger.warning(
                "janitor of %s/%s: %d entries failed to move (left pending): %s",
                self.namespace,
                self.name,
                outcome.failed,
                "; ".join(dict.fromkeys(outcome.errors)),
            )
        if outcome.removed:
            logger.info(
                "%s/%s: removed consumers %s", self.namespace, self.name, ", ".join(outcome.removed)
            )


class JanitorLoop:
    """The operator's janitor for one ConsumerGroup (a kopf daemon of its own)."""

    def __init__(self, ctx: Context, body: Mapping[str, Any], pods: PodIndex) -> None:
        self.ctx = ctx
        self.body = body
        meta = body["metadata"]
        self.namespace, self.name, self.me = meta["namespace"], meta["name"], who(body)
        self.janitor = Janitor(ctx.kube, ctx.metrics, body)
        self.pods = pods
        self.tracker: PodTracker | None = None
        """Of the Deployment the spec names now (a new one when it names another)."""
        self.cron_job_wanted: bool | None = None
        """Whether a CronJob was wanted at the last step (None: not looked yet)."""

    async def run(self, stopped: Stopped) -> None:
        wake = self.ctx.wakeup(self.me, "janitor")
        while not stopped:
            wake.clear()
            try:
                delay = await self.step()
            except GatewayError as exc:
                logger.warning("janitor of %s/%s: %s", self.namespace, self.name, exc.message)
                delay = RETRY_SECONDS
            except Exception:  # the loop must outlive any one bad pass
                logger.exception("janitor of %s/%s failed", self.namespace, self.name)
                delay = RETRY_SECONDS
            await sleep(stopped, wake, delay)  # an edit (or unpause) cuts it short

    async def step(self) -> float:
        """One pass (or CronJob check); returns how long to wait before the next."""
        if is_paused(self.body["metadata"]):
            return IDLE_SECONDS
        try:
            spec = parse(ConsumerGroupSpec, self.body.get("spec"))
        except SpecError:
            return IDLE_SECONDS  # the group loop reports it
        recovery = spec.recovery
        wanted = recovery.enabled and recovery.mode is JanitorMode.CRON_JOB
        if wanted or self.cron_job_wanted is not False:
            await keep_cron_job(self.ctx.kube, self.body, recovery, wanted=wanted)
        self.cron_job_wanted = wanted
        interval = recovery.interval.seconds
        if not recovery.enabled or wanted:
            return IDLE_SECONDS
        group = spec.group_name or self.name
        binding = self.ctx.streams.get((self.namespace, spec.stream_ref.name))
        if (
            binding is None
            or not binding.usable
            or binding.poller is None
            or binding.source is None
        ):
            return WAIT_SECONDS
        owner = self.ctx.claims.owner(claim_target(binding, group))
        if owner != self.me:
            return WAIT_SECONDS if owner is None else interval  # not claimed yet / not ours
        if binding.source.key is not None:
            keys: Sequence[str] = [binding.source.key]
        else:
            latest = binding.poller.latest
            keys = latest.keys_of(binding.source) if latest is not None else ()
        if not keys:
            return WAIT_SECONDS
        outcome = await self.janitor.run(
            binding.poller.gateway, keys, group, recovery, tracked_pods(self.track(spec))
        )
        self.ctx.recovery_findings[self.me] = outcome.findings()
        return interval if outcome.complete else min(interval, MORE_WORK_SECONDS)

    def track(self, spec: ConsumerGroupSpec) -> PodTracker | None:
        deployment = deployment_name(self.name, spec)
        if deployment is None:
            self.tracker = None
        elif self.tracker is None or self.tracker.deployment != deployment:
            history = self.ctx.pod_history
            self.tracker = PodTracker(self.pods, history, self.namespace, deployment)
        return self.tracker


async def run(ctx: Context, body: Mapping[str, Any], stopped: Stopped, pods: PodIndex) -> None:
    await JanitorLoop(ctx, body, pods).run(stopped)


# ------------------------------------------------------------------ mode CronJob


def cron_job_for(body: Mapping[str, Any], recovery: Recovery) -> dict[str, Any]:
    return desired_cron_job(
        body,
        schedule=recovery.schedule,
        image=os.environ.get("STREAMHERD_IMAGE", DEFAULT_IMAGE),
        service_account=os.environ.get(
            "STREAMHERD_JANITOR_SERVICE_ACCOUNT", DEFAULT_SERVICE_ACCOUNT
        ),
        # Time budget plus connecting and reporting; a hung run must not block the next.
        active_deadline_seconds=math.ceil(recovery.time_budget.seconds) + 120,
    )


async def keep_cron_job(
    kube: KubeClient, body: Mapping[str, Any], recovery: Recovery, *, wanted: bool
) -> None:
    """Create or correct the janitor's CronJob when ``wanted``; otherwise delete ours if
    there is one. A CronJob of that name that we do not own is left alone (and said so)."""
    desired = cron_job_for(body, recovery)
    meta = desired["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    current = await kube.get(rq.CRONJOBS, namespace, name)
    if current is not None and not owned_by(current, body):
        if wanted:
            logger.warning(
                "CronJob %s/%s exists and is not owned by ConsumerGroup %s: left alone",
                namespace,
                name,
                body["metadata"]["name"],
            )
        return
    if not wanted:
        if current is not None:
            with contextlib.suppress(NotFound):  # gone already: fine
                await kube.send(rq.delete(rq.CRONJOBS, namespace, name))
        return
    if current is None:
        await kube.send(rq.create(rq.CRONJOBS, namespace, desired))
        return
    patch = cron_job_patch(current, desired)
    if patch is not None:
        await kube.send(rq.merge_patch(rq.CRONJOBS, namespace, name, patch))


# ------------------------------------------------------------------ `streamherd janitor`


async def run_command(kube: KubeClient, namespace: str, name: str) -> tuple[int, str]:
    """What `streamherd janitor` does (a CronJob's pod, or by hand): one pass for the
    ConsumerGroup, its status counters written. Returns (exit code, one line to print)."""
    where = f"ConsumerGroup {namespace}/{name}"
    body = await kube.get(rq.CONSUMER_GROUPS, namespace, name)
    if body is None:
        return 1, f"{where} not found"
    if is_paused(body["metadata"]):
        return 0, f"{where} is paused: nothing done"
    try:
        spec = parse(ConsumerGroupSpec, body.get("spec"))
    except SpecError as exc:
        return 1, f"{where} has an invalid spec: {exc}"
    if not spec.recovery.enabled:
        return 0, f"{where} has recovery disabled: nothing done"
    ready = condition(body.get("status"), ConditionType.READY)
    if ready is not None and ready.get("reason") == Reason.GROUP_CONFLICT:
        return 0, f"{where} does not manage its group ({ready.get('message')}): nothing done"
    stream_name = spec.stream_ref.name
    stream = await kube.get(rq.REDIS_STREAMS, namespace, stream_name)
    if stream is None:
        return 1, f"RedisStream {namespace}/{stream_name} (streamRef of {where}) not found"
    if is_paused(stream["metadata"]):
        return 0, f"RedisStream {namespace}/{stream_name} is paused: nothing done"
    try:
        stream_spec = parse(RedisStreamSpec, stream.get("spec"))
        endpoint = await SecretCache(kube).resolve(namespace, stream_spec.redis)
    except SpecError as exc:
        return 1, f"RedisStream {namespace}/{stream_name} has an invalid spec: {exc}"
    except SecretMissing as exc:
        return 1, f"RedisStream {namespace}/{stream_name}: {exc}"
    group = spec.group_name or name
    gateway = RedisGateway(endpoint)
    try:
        if stream_spec.key is not None:
            keys = [stream_spec.key]
        else:
            scan = ScanState.start(str(stream_spec.key_pattern))
            while not await gateway.scan_streams(scan):
                pass
            keys = sorted(scan.found)
        janitor = Janitor(kube, Metrics(), body)
        pods = await listed_pods(kube, namespace, name, spec)
        outcome = await janitor.run(gateway, keys, group, spec.recovery, pods)
    except GatewayError as exc:
        return 1, f"{where}: Redis: {exc.message}"
    finally:
        await gateway.close()
    if outcome.keys == 0:
        return (
            1,
            f"{where}: group {group!r} not found on {stream_spec.key or stream_spec.key_pattern!r}",
        )
    refused = "".join(f"; {problem}" for problem in outcome.refused.values())
    return 0, f"janitor of {where}: {outcome.summary()}{refused}"
