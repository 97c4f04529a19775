"""Autoscaling a ConsumerGroup's Deployment: the decisions are pure (decisions/scaling.py);
this applies them, with the care a cluster needs: no fighting another autoscaler, the pods
with the least unfinished work go first, and a group at zero wakes on its first message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamherd.api.consumergroup import Autoscaling, ConsumerGroupSpec
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.controller.apifailures import api_problem
from streamherd.controller.consumers import deployment_name, deployment_pods, running
from streamherd.controller.context import Context, StreamBinding
from streamherd.controller.polling import Poller, Prober, Waker
from streamherd.controller.reporting import StatusWriter
from streamherd.decisions.bursts import Baseline, Follow, follow
from streamherd.decisions.conditions import Verdict, timestamp
from streamherd.decisions.rates import Progress, completion_rate, smoothed
from streamherd.decisions.scaling import Action, Decision, Memory, Observed, decide
from streamherd.decisions.totals import GroupTotals
from streamherd.decisions.workload import deletion_costs
from streamherd.gateway import GatewayError
from streamherd.kube import Forbidden, KubeError, Priority
from streamherd.kube import requests as rq
from streamherd.kube.manifests import (
    DELETION_COST,
    TEMPLATE_HASH,
    consumer_deployment,
    deletion_cost_patch,
    deployment_state,
)

logger = logging.getLogger(__name__)

SCALE_FIELDS = ("replicas", "desiredReplicas", "lastScaleTime", "lastScaleReason")
OWN_WRITE_GRACE = 10.0
"""Seconds during which a Deployment that still shows the old replicas is taken to be on its
way to what we asked (the watch that feeds the index lags our own PATCH)."""


@dataclass
class ScalingOutcome:
    fields: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(SCALE_FIELDS))
    conditions: list[Verdict] = field(default_factory=list)
    ready: Verdict | None = None
    """Set when scaling makes the group not Ready (a conflict, a missing Deployment)."""


class Autoscaler:
    """One ConsumerGroup's autoscaler: its memory between polls, and the acting."""

    def __init__(
        self, ctx: Context, body: Mapping[str, Any], writer: StatusWriter, me: str
    ) -> None:
        self.ctx, self.body, self.writer, self.me = ctx, body, writer, me
        self.memory = Memory()
        self.rate: float | None = None
        self.throughput: float | None = None
        """Entries finished per second between the last two polls (any load)."""
        self._progress: Progress | None = None  # at the last poll
        self._requested: tuple[int, float, int | None] | None = None
        """(replicas, when, the Deployment's generation then) of our last scale request."""
        self._generation: int | None = None
        """The Deployment's generation as this step saw it (before acting)."""
        self._waker: Waker | None = None
        self._prober: Prober | None = None
        self.deletion_cost_refused: Verdict | None = None
        """ApiAccess=False since pod-deletion-cost was last forbidden (until it is set again)."""
        self._applied_generation: int | None = None
        """The owned Deployment's generation after our last apply (None: not yet applied)."""
        status = body.get("status") or {}
        self.last_time = status.get("lastScaleTime")
        self.last_reason = status.get("lastScaleReason")

    def close(self) -> None:
        self.unwatch()
        self.ctx.deployments.release(self.me)

    def unwatch(self) -> None:
        """Followed by neither the waker nor the burst probe (until a step says again)."""
        if self._waker is not None:
            self._waker.unwatch(self.me)
            self._waker = None
        self._unprobe()

    def _unprobe(self) -> None:
        if self._prober is not None:
            self._prober.forget(self.me)
            self._prober = None

    async def step(
        self,
        spec: ConsumerGroupSpec,
        group: str,
        binding: StreamBinding,
        keys: Sequence[str],
        totals: GroupTotals,
        taken_at: float,
        lengths: Mapping[str, int | None] | None = None,
    ) -> ScalingOutcome:
        """One poll's autoscaling: keep an owned Deployment, then decide and act unless
        something stops us (no Deployment, disabled, another autoscaler)."""
        meta = self.body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        deployment = deployment_name(name, spec)
        assert deployment is not None and binding.poller is not None
        policy = spec.autoscaling or Autoscaling(enabled=False)
        try:
            state = await self.ctx.deployments.lookup(self.me, namespace, deployment)
        except KubeError as exc:  # not known, so not "missing": hold, and say why
            self.unwatch()
            return _deployments_unreadable(namespace, exc)
        if spec.consumers is not None and spec.consumers.template is not None:
            refused = await self._keep_owned_deployment(spec, group, binding, deployment, policy)
            if refused is not None:
                self.unwatch()
                return refused
            state = self.ctx.deployments.get((namespace, deployment))
        if state is None:
            self.unwatch()
            return _deployment_missing(namespace, deployment)
        self._generation = _generation(state)
        current = self._current(state["replicas"], self._generation)
        stopped = await self._stopped(policy, namespace, deployment, current)
        if stopped is not None:
            self.unwatch()
            return stopped
        self._update_rate(totals, taken_at, int(state.get("ready") or 0))
        observed = Observed(
            replicas=current,
            lag=totals.lag,
            pending=totals.pending,
            rate_per_replica=self.rate,
            pending_exactness=totals.pending_exactness,
        )
        decision = decide(policy, observed, self.memory, time.monotonic())
        self.memory = decision.memory
        idle_since = decision.memory.idle_since
        if policy.min_replicas == 0 and decision.desired > 0 and idle_since is not None:
            # Going to zero is decided at a poll: have one when idleBeforeZero has passed
            # (once: a zero that time already allows goes by the group's own schedule).
            zero_at = idle_since + policy.idle_before_zero.seconds
            if zero_at > time.monotonic():
                binding.poller.poll_at(self.me, zero_at)
        if decision.desired != current:
            failed = await self._apply(
                decision, current, namespace, deployment, group, binding, keys
            )
            if failed is not None:  # not Scaling: the condition says what failed
                self.unwatch()
                return ScalingOutcome(self._fields(current, decision.desired), *failed)
            current = decision.desired
        self.ctx.metrics.replicas.labels(namespace, name, group).set(current)
        self.ctx.metrics.desired_replicas.labels(namespace, name, group).set(decision.desired)
        if current == 0:
            self._unprobe()
            self._watch(binding.poller, keys, group)
        else:
            self._follow(binding.poller, keys, group, policy, current, totals, lengths, taken_at)
        return self._decided(current, decision, policy)

    def _fields(self, replicas: int, desired: int | None) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "desiredReplicas": desired,
            "lastScaleTime": self.last_time,
            "lastScaleReason": self.last_reason,
        }

    async def _stopped(
        self, policy: Autoscaling, namespace: str, deployment: str, current: int
    ) -> ScalingOutcome | None:
        """Why not to scale at all this poll (disabled, or another autoscaler drives the
        Deployment: we refuse to fight it); None to go on."""
        if not policy.enabled:
            return ScalingOutcome(
                self._fields(current, None),
                [
                    _scaling(
                        ConditionStatus.FALSE, Reason.SCALING_DISABLED, "autoscaling is disabled"
                    )
                ],
            )
        try:
            conflict = await self.ctx.scalers.conflict(namespace, deployment)
        except KubeError as exc:  # fail closed: an HPA we cannot see may be scaling it
            refused = api_problem(
                exc,
                ConditionType.SCALING_ACTIVE,
                consequence=", so it cannot rule out another autoscaler and does not scale",
            )
            return ScalingOutcome(
                self._fields(current, None),
                [refused],
                ready=_ready(refused) if isinstance(exc, Forbidden) else None,
            )
        if conflict is None:
            return None
        message = f"{conflict} already scales Deployment {deployment!r}: remove it, or disable autoscaling here"
        return ScalingOutcome(
            self._fields(current, None),
            [_scaling(ConditionStatus.FALSE, Reason.SCALER_CONFLICT, message)],
            ready=Verdict.not_ready(Reason.SCALER_CONFLICT, message),
        )

    def _decided(self, current: int, decision: Decision, policy: Autoscaling) -> ScalingOutcome:
        """Status fields and ScalingActive after a decision (False when the metric is unknown)."""
        if decision.action is Action.UNKNOWN:
            condition = _scaling(ConditionStatus.FALSE, Reason.METRIC_UNKNOWN, decision.reason)
        else:
            # Not decision.reason: its live numbers would make a status write of every poll
            # (it is in lastScaleReason and the Event of each scale action).
            condition = _scaling(
                ConditionStatus.TRUE,
                Reason.SCALING,
                f"{str(policy.metric).lower()} drives the replicas ({decision.desired} wanted)",
            )
        conditions = [condition]
        watch_refused = self.ctx.deployments.watch_refused(self.body["metadata"]["namespace"])
        if self.deletion_cost_refused is not None:  # until a scale-in sets the costs again
            conditions.append(self.deletion_cost_refused)
        elif watch_refused is not None:  # one ApiAccess condition: the first problem found
            conditions.append(
                api_problem(
                    watch_refused,
                    ConditionType.API_ACCESS,
                    consequence=", so Deployment changes are seen only when the namespace is "
                    "listed again (--deployment-relist-interval)",
                )
            )
        return ScalingOutcome(self._fields(current, decision.desired), conditions)

    def _current(self, seen: int, generation: int | None = None) -> int:
        """The replicas the Deployment has, or is about to have after our own recent write.
        Ours until the watch shows it, or shows a later spec write (a generation past the
        one we wrote on): someone else's (kubectl scale, an edit) is then what it has, not
        hidden for the rest of the grace (at worst we scale once more to what we asked)."""
        if self._requested is not None:
            wanted, when, written_on = self._requested
            overwritten = (
                generation is not None and written_on is not None and generation > written_on
            )
            if seen == wanted or overwritten or time.monotonic() - when > OWN_WRITE_GRACE:
                self._requested = None
            else:
                return wanted
        return seen

    def _update_rate(self, totals: GroupTotals, now: float, ready: int) -> None:
        """The per-replica completion rate, smoothed (decisions.rates)."""
        progress = Progress.of(totals, now, ready)
        measured = completion_rate(self._progress, progress) if progress is not None else None
        before = self._progress
        self.throughput = (
            max(0.0, (progress.finished - before.finished) / (progress.at - before.at))
            if progress is not None and before is not None and progress.at > before.at
            else None
        )
        self._progress = progress
        if measured is not None:
            self.rate = smoothed(self.rate, measured)

    async def _apply(
        self,
        decision: Decision,
        current: int,
        namespace: str,
        deployment: str,
        group: str,
        binding: StreamBinding,
        keys: Sequence[str],
    ) -> tuple[list[Verdict], Verdict | None] | None:
        """Scale to the decision; on failure the conditions (and Ready) that say so."""
        if decision.desired < current and decision.desired > 0:
            await self._mark_for_deletion(namespace, deployment, group, binding, keys)
        try:
            await self.ctx.kube.scale(namespace, deployment, decision.desired)
        except KubeError as exc:
            logger.warning("scaling %s/%s failed: %s", namespace, deployment, exc)
            failed = api_problem(
                exc,
                ConditionType.SCALING_ACTIVE,
                consequence=f", so Deployment {deployment!r} stays at {current} replicas",
            )
            return [failed], _ready(failed) if isinstance(exc, Forbidden) else None
        self._requested = (decision.desired, time.monotonic(), self._generation)
        self.last_time = timestamp(datetime.now(UTC))
        self.last_reason = decision.reason
        meta = self.body["metadata"]
        self.ctx.metrics.scaling_decisions.labels(
            meta["namespace"], meta["name"], str(decision.action)
        ).inc()
        await self.writer.event(
            "Normal",
            str(decision.action),
            f"{deployment}: {current} -> {decision.desired} replicas: {decision.reason}",
        )
        return None

    async def _mark_for_deletion(
        self,
        namespace: str,
        deployment: str,
        group: str,
        binding: StreamBinding,
        keys: Sequence[str],
    ) -> None:
        """Before scale-in: pods whose consumers hold the fewest pending entries go first."""
        assert binding.poller is not None
        try:
            pods = running(await deployment_pods(self.ctx.kube, namespace, deployment) or [])
            pending = await binding.poller.gateway.consumer_pending(keys, group)
        except (KubeError, GatewayError) as exc:
            logger.warning("no pod-deletion-cost for %s/%s: %s", namespace, deployment, exc)
            if isinstance(exc, Forbidden):
                self._deletion_cost_forbidden(exc)
            return
        for pod, cost in deletion_costs(pods, pending).items():
            annotations = pods[pod]["metadata"].get("annotations") or {}
            if annotations.get(DELETION_COST) == str(cost):
                continue
            try:
                # Part of the scale-in it comes before: not behind status writes.
                await self.ctx.kube.merge_patch(
                    rq.PODS, namespace, pod, deletion_cost_patch(cost), priority=Priority.SCALE
                )
            except Forbidden as exc:  # a condition says it, not only a log line
                logger.warning("no pod-deletion-cost for %s/%s: %s", namespace, deployment, exc)
                self._deletion_cost_forbidden(exc)
                return
            except KubeError:  # a pod gone meanwhile needs no cost
                continue
        self.deletion_cost_refused = None

    def _deletion_cost_forbidden(self, exc: Forbidden) -> None:
        self.deletion_cost_refused = api_problem(
            exc,
            ConditionType.API_ACCESS,
            consequence=", so scale-in does not remove the pods holding the fewest pending "
            "entries first (the ReplicaSet picks)",
        )

    async def _keep_owned_deployment(
        self,
        spec: ConsumerGroupSpec,
        group: str,
        binding: StreamBinding,
        deployment: str,
        policy: Autoscaling,
    ) -> ScalingOutcome | None:
        """Create the Deployment from the template and keep it as the template says, by
        server-side apply (field manager ``streamherd``): keys removed from the template
        disappear, and an edit of the fields we apply (``kubectl edit``) is reverted.

        When: at first sight in this process (drift made while it was down), when the
        template changes (its hash, from the Deployment watch: no GET per poll), and when
        the Deployment's ``generation`` moved past the one our last apply left (someone
        changed its spec; after our own /scale the apply is a no-op the API server does not
        store). Replicas are applied as they are (or as we just asked), never reset.
        Returns the outcome when the API refuses (a condition, not a log line)."""
        if binding.spec is None:
            return None
        namespace = self.body["metadata"]["namespace"]
        state = self.ctx.deployments.get((namespace, deployment))
        initial = policy.min_replicas if policy.enabled else 1
        replicas = (
            initial if state is None else self._current(int(state["replicas"]), _generation(state))
        )
        wanted = consumer_deployment(
            owner=self.body,
            name=deployment,
            spec=spec,
            stream=binding.spec,
            group=group,
            replicas=replicas,
        )
        template_hash = wanted["metadata"]["annotations"][TEMPLATE_HASH]
        changed = state is not None and state.get("template_hash") != template_hash
        drifted = state is not None and (
            self._applied_generation is None
            or int(state.get("generation") or 0) > self._applied_generation
        )
        if state is not None and not changed and not drifted:
            return None
        try:
            applied = await self.ctx.kube.apply(rq.DEPLOYMENTS, wanted, priority=Priority.SCALE)
        except KubeError as exc:
            logger.warning("keeping Deployment %s/%s failed: %s", namespace, deployment, exc)
            refused = api_problem(
                exc, ConditionType.SCALING_ACTIVE, consequence=f" (Deployment {deployment!r})"
            )
            return ScalingOutcome(conditions=[refused], ready=_ready(refused))
        after = deployment_state(applied)
        self._applied_generation = int(after.get("generation") or 0)
        self.ctx.deployments.created(applied)
        if state is None:
            await self.writer.event(
                "Normal",
                "DeploymentCreated",
                f"created Deployment {deployment!r} from the template",
            )
        elif changed:
            await self.writer.event(
                "Normal",
                "DeploymentUpdated",
                f"updated Deployment {deployment!r} to the new template",
            )
        elif self._applied_generation > int(state.get("generation") or 0):
            await self.writer.event(
                "Normal",
                "DeploymentReverted",
                f"reverted changes to Deployment {deployment!r}: it follows "
                "spec.consumers.template (edit that instead)",
            )
        return None

    def _watch(
        self,
        poller: Poller,
        keys: Sequence[str],
        group: str,
        then: Callable[[], None] | None = None,
    ) -> None:
        waker = poller.waker()
        if self._waker is not None and self._waker is not waker:
            self._waker.unwatch(self.me)
        self._waker = waker
        waker.watch(self.me, keys, group, then)

    def _follow(
        self,
        poller: Poller,
        keys: Sequence[str],
        group: str,
        policy: Autoscaling,
        current: int,
        totals: GroupTotals,
        lengths: Mapping[str, int | None] | None,
        taken_at: float,
    ) -> None:
        """At one replica or more, until the next poll: a busy group's streams are probed,
        an idle one's first new entry (the waker) starts the probing (decisions/bursts.py)."""
        prober = poller.prober()
        if self._prober is not None and self._prober is not prober:
            self._unprobe()
        known = {k: n for k, n in (lengths or {}).items() if n is not None}
        how = follow(
            policy,
            current,
            totals.backlog,
            known,
            prober.baseline_of(self.me),
            cluster=poller.gateway.endpoint.cluster,
        )
        if how is Follow.NONE or totals.backlog.value is None:
            self.unwatch()
            return
        self._prober = prober
        baseline = Baseline(
            known, totals.backlog.value, current, self.rate, taken_at, self.throughput
        )
        prober.track(self.me, list(known), policy, baseline, armed=how is Follow.PROBE)
        if how is Follow.PROBE:
            if self._waker is not None:
                self._waker.unwatch(self.me)
                self._waker = None
            return
        me = self.me
        self._watch(poller, keys, group, then=lambda: prober.arm(me))


def _generation(state: Mapping[str, Any] | None) -> int | None:
    value = (state or {}).get("generation")
    return int(value) if value is not None else None


def _deployment_missing(namespace: str, deployment: str) -> ScalingOutcome:
    message = f"Deployment {deployment!r} not found in namespace {namespace!r}"
    return ScalingOutcome(
        conditions=[_scaling(ConditionStatus.FALSE, Reason.DEPLOYMENT_NOT_FOUND, message)],
        ready=Verdict.not_ready(Reason.DEPLOYMENT_NOT_FOUND, message),
    )


def _ready(scaling: Verdict) -> Verdict:
    """Ready=False for the same reason as a ScalingActive=False."""
    return Verdict.not_ready(scaling.reason, scaling.message)


def _deployments_unreadable(namespace: str, exc: KubeError) -> ScalingOutcome:
    """The Deployments cannot be listed: not known, so never "missing"; no scaling."""
    refused = api_problem(
        exc,
        ConditionType.SCALING_ACTIVE,
        consequence=f" (the Deployments of namespace {namespace!r}), so it does not scale",
    )
    return ScalingOutcome(conditions=[refused], ready=_ready(refused))


def _scaling(status: ConditionStatus, reason: Reason, message: str) -> Verdict:
    return Verdict(ConditionType.SCALING_ACTIVE, status, reason, message)
