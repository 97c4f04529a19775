"""The janitor: recover stranded work, dead-letter poison messages, remove dead consumers.

One janitor per ConsumerGroup. In mode Operator a loop here runs a bounded pass every
``recovery.interval`` (``controller.janitor_pass``: what a pass does, in steps, at a cost
proportional to the work); in mode CronJob the loop keeps a CronJob whose pod runs
``streamherd janitor`` (``run_command`` below), which runs the very same pass once. Both
report it the same way (``Janitor``): status counters, Events, metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from streamherd import __version__
from streamherd.api import SpecError, SpecParser, is_paused, parse
from streamherd.api.consumergroup import (
    ConsumerGroupSpec,
    JanitorMode,
    Recovery,
)
from streamherd.api.redisstream import RedisStreamSpec
from streamherd.api.status import ConditionType, Reason
from streamherd.controller.apifailures import api_problem
from streamherd.controller.consumers import (
    PodHistory,
    PodIndex,
    PodTracker,
    deployment_name,
    listed_pod_index,
)
from streamherd.controller.context import Context, SecretCache, claim_target, group_id
from streamherd.controller.janitor_pass import (
    Outcome,
    PodsReader,
    Progress,
    observed_states,
    run_pass,
)
from streamherd.controller.polling import scan_pattern
from streamherd.controller.reporting import StatusBudget, StatusWriter
from streamherd.controller.waiting import Stopped, sleep, stop_watched
from streamherd.decisions.conditions import condition
from streamherd.decisions.recovery import (
    Pods,
)
from streamherd.gateway import GatewayError, RedisGateway, SecretMissing
from streamherd.kube import Forbidden, KubeClient, KubeError, NotFound
from streamherd.kube import requests as rq
from streamherd.kube.manifests import cron_job_patch, desired_cron_job, owned_by
from streamherd.metrics import Metrics
from streamherd.observations import GroupState

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
CRON_JOB_FIELD = "janitorCronJob"
HEARTBEAT_SECONDS = 60.0
DEFAULT_IMAGE = f"ghcr.io/streamherd/streamherd:{__version__}"
DEFAULT_SERVICE_ACCOUNT = "streamherd-janitor"


def tracked_pods(tracker: PodTracker | None) -> PodsReader:
    """The pods of a pass, from a tracker (None: the group names no Deployment)."""

    async def read() -> Pods | None:
        return None if tracker is None else tracker.view()

    return read


async def listed_pods(
    kube: KubeClient, namespace: str, name: str, spec: ConsumerGroupSpec
) -> tuple[PodsReader, Forbidden | None]:
    """For a one-shot run (`streamherd janitor`): the pods as one LIST shows them. Nothing was
    seen before, so no consumer is dead: stale entries wait for minIdle. A 403 on the way is
    returned (the pass still runs, by minIdle alone) so that the run can say it."""
    deployment = deployment_name(name, spec)
    index, denied = None, None
    if deployment is not None:
        try:
            index = await listed_pod_index(kube, namespace, deployment)
        except Forbidden as exc:
            denied = exc
        except KubeError as exc:
            logger.warning("pods of Deployment %s/%s not read: %s", namespace, deployment, exc)
    tracker = None
    if deployment is not None and index is not None:
        tracker = PodTracker(index, PodHistory(), namespace, deployment)
    return tracked_pods(tracker), denied


def janitor_denied(exc: Forbidden) -> str:
    return (
        f"PermissionDenied: the janitor may not {exc.action}, so it cannot tell which consumers "
        "are gone and recovered only entries idle for minIdle: grant it to the janitor's "
        "ServiceAccount (README: RBAC per feature)"
    )


class Janitor:
    """Runs passes for one ConsumerGroup and reports them: status counters, Events,
    Prometheus counters. Used by the operator's loop and by `streamherd janitor` alike."""

    def __init__(
        self,
        kube: KubeClient,
        metrics: Metrics,
        body: Mapping[str, Any],
        budget: StatusBudget | None = None,
    ) -> None:
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
            heartbeat_budget=budget,  # the operator's: its heartbeats share the numbers' budget
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
        observed: Mapping[str, GroupState | None] | None = None,
    ) -> Outcome:
        labels = (self.namespace, self.name, group)
        try:
            outcome = await run_pass(
                gateway,
                keys,
                group,
                recovery,
                pods=pods,
                progress=self.progress,
                observed=observed,
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
        self.writer.resume_counters(self.totals, STATUS_FIELDS)
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

    def __init__(
        self,
        ctx: Context,
        body: Mapping[str, Any],
        pods: PodIndex,
        parse_spec: SpecParser[ConsumerGroupSpec] | None = None,
    ) -> None:
        self.ctx = ctx
        self.body = body
        meta = body["metadata"]
        self.namespace, self.name, self.me = meta["namespace"], meta["name"], group_id(body)
        self.janitor = Janitor(ctx.kube, ctx.metrics, body, ctx.status_budget)
        self.pods = pods
        self.parse_spec = parse_spec or SpecParser(ConsumerGroupSpec)
        self.tracker: PodTracker | None = None
        """Of the Deployment the spec names now (a new one when it names another)."""
        self.cron_status = StatusWriter(
            ctx.kube, rq.CONSUMER_GROUPS, body, numbers_every=0, immediate=(CRON_JOB_FIELD,)
        )
        """Owns ``status.janitorCronJob`` (no heartbeat: that is the janitor runs' field)."""

    async def run(self, stopped: Stopped) -> None:
        wake = self.ctx.wakeup(self.me, "janitor")
        async with stop_watched(stopped, wake):
            while not stopped:
                wake.clear()
                try:
                    delay = await self.step()
                    self.ctx.api_problems.pop(self.me, None)
                except KubeError as exc:  # said in the group's Ready, not a trace every pass
                    logger.warning("janitor of %s/%s: %s", self.namespace, self.name, exc)
                    self.ctx.api_problems[self.me] = api_problem(
                        exc, consequence=", so the janitor does not run"
                    )
                    delay = RETRY_SECONDS
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
            spec = self.parse_spec(self.body.get("spec"))
        except SpecError:
            return IDLE_SECONDS  # the group loop reports it
        recovery = spec.recovery
        wanted = recovery.enabled and recovery.mode is JanitorMode.CRON_JOB
        # CronJobs are touched only in mode CronJob, or to delete the one status says we
        # made (a switch to mode Operator): kept in the object's status, that survives a
        # restart, a re-list and a second replica, and a group never in mode CronJob needs
        # no permission on CronJobs. A refusal raises: run() makes it the group's condition.
        recorded = self.cron_status.current.get(CRON_JOB_FIELD)
        if wanted or recorded:
            ours = await keep_cron_job(self.ctx.kube, self.body, recovery, wanted=wanted)
            await self.cron_status.write({CRON_JOB_FIELD: ours})
        interval = recovery.interval.seconds
        if not recovery.enabled or wanted:
            return IDLE_SECONDS
        group = spec.group_name or self.name
        binding = self.ctx.streams.get((self.namespace, spec.stream_ref.name))
        stream = binding.in_use() if binding is not None else None
        if binding is None or stream is None:
            return WAIT_SECONDS
        owner = self.ctx.claims.owner(claim_target(binding, group))
        if owner != self.me:
            return WAIT_SECONDS if owner is None else interval  # not claimed yet / not ours
        latest = stream.poller.latest_for(stream.source)
        if stream.source.key is not None:
            keys: Sequence[str] = [stream.source.key]
        else:
            keys = latest.keys_of(stream.source) if latest is not None else ()
        if not keys:
            return WAIT_SECONDS
        observed = observed_states(latest.observation if latest else None, keys, group)
        outcome = await self.janitor.run(
            stream.poller.gateway,
            keys,
            group,
            recovery,
            tracked_pods(self.track(spec)),
            observed,
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


async def run(
    ctx: Context,
    body: Mapping[str, Any],
    stopped: Stopped,
    pods: PodIndex,
    parse_spec: SpecParser[ConsumerGroupSpec] | None = None,
) -> None:
    """``parse_spec``: the group loop's (``groups.spec_parser``), else one of its own."""
    await JanitorLoop(ctx, body, pods, parse_spec).run(stopped)


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
) -> str | None:
    """Create or correct the janitor's CronJob when ``wanted``; otherwise delete ours if
    there is one. A CronJob of that name that we do not own is left alone (and said so).
    Returns the name of our CronJob that exists now (None: none)."""
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
        return None
    if not wanted:
        if current is not None:
            with contextlib.suppress(NotFound):  # gone already: fine
                await kube.send(rq.delete(rq.CRONJOBS, namespace, name))
        return None
    if current is None:
        await kube.send(rq.create(rq.CRONJOBS, namespace, desired))
        return str(name)
    patch = cron_job_patch(current, desired)
    if patch is not None:
        await kube.send(rq.merge_patch(rq.CRONJOBS, namespace, name, patch))
    return str(name)


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
    if ready is not None and ready.get("reason") == Reason.GROUP_OWNED_ELSEWHERE:
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
            keys: Sequence[str] = [stream_spec.key]
        else:  # the pattern's streams, as the poller names them (no dead-letter streams)
            keys = sorted(await scan_pattern(gateway, str(stream_spec.key_pattern)))
        janitor = Janitor(kube, Metrics(), body)
        pods, denied = await listed_pods(kube, namespace, name, spec)
        observed = observed_states(await gateway.observe(keys), keys, group)
        outcome = await janitor.run(gateway, keys, group, spec.recovery, pods, observed)
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
    line = f"janitor of {where}: {outcome.summary()}{refused}"
    if denied is not None:
        # Not only a log line: an Event on the group, and the Job fails (kubectl get jobs).
        await janitor.writer.event("Warning", str(Reason.PERMISSION_DENIED), janitor_denied(denied))
        return 2, f"{line}; {janitor_denied(denied)}"
    return 0, line
