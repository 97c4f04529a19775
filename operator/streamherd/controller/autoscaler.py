"""Autoscaling a ConsumerGroup's Deployment: the decisions are pure (decisions/scaling.py);
this applies them, with the care a cluster needs: no fighting another autoscaler, the pods
with the least unfinished work go first, and a group at zero wakes on its first message."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamherd.api.consumergroup import Autoscaling, ConsumerGroupSpec
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.controller.consumers import deployment_name, deployment_pods, running
from streamherd.controller.context import Context, StreamBinding
from streamherd.controller.polling import Poller, Waker
from streamherd.controller.reporting import StatusWriter
from streamherd.decisions.conditions import Verdict, timestamp
from streamherd.decisions.rates import Progress, completion_rate, smoothed
from streamherd.decisions.scaling import Action, Decision, Memory, Observed, decide
from streamherd.decisions.totals import GroupTotals
from streamherd.decisions.workload import deletion_costs
from streamherd.gateway import GatewayError
from streamherd.kube import Conflict, KubeError
from streamherd.kube import requests as rq
from streamherd.kube.manifests import (
    DELETION_COST,
    TEMPLATE_HASH,
    consumer_deployment,
    deletion_cost_patch,
    deployment_state,
    template_patch,
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
        self._progress: Progress | None = None  # at the last poll
        self._requested: tuple[int, float] | None = None  # (replicas, when) we asked for
        self._waker: Waker | None = None
        status = body.get("status") or {}
        self.last_time = status.get("lastScaleTime")
        self.last_reason = status.get("lastScaleReason")

    def close(self) -> None:
        self.unwatch()

    def unwatch(self) -> None:
        if self._waker is not None:
            self._waker.unwatch(self.me)
            self._waker = None

    async def step(
        self,
        spec: ConsumerGroupSpec,
        group: str,
        binding: StreamBinding,
        keys: Sequence[str],
        totals: GroupTotals,
        taken_at: float,
    ) -> ScalingOutcome:
        """One poll's autoscaling: keep an owned Deployment, then decide and act unless
        something stops us (no Deployment, disabled, another autoscaler)."""
        meta = self.body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        deployment = deployment_name(name, spec)
        assert deployment is not None and binding.poller is not None
        policy = spec.autoscaling or Autoscaling(enabled=False)
        if spec.consumers is not None and spec.consumers.template is not None:
            await self._keep_owned_deployment(spec, group, binding, deployment, policy)
        state = self.ctx.deployments.get((namespace, deployment))
        if state is None:
            self.unwatch()
            return _deployment_missing(namespace, deployment)
        current = self._current(state["replicas"])
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
        if decision.desired != current:
            await self._apply(decision, current, namespace, deployment, group, binding, keys)
            current = decision.desired
        self.ctx.metrics.replicas.labels(namespace, name, group).set(current)
        self.ctx.metrics.desired_replicas.labels(namespace, name, group).set(decision.desired)
        if current == 0:
            self._watch(binding.poller, keys, group)
        else:
            self.unwatch()
        return self._decided(current, decision)

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
        conflict = await self.ctx.scalers.conflict(namespace, deployment)
        if conflict is None:
            return None
        message = f"{conflict} already scales Deployment {deployment!r}: remove it, or disable autoscaling here"
        return ScalingOutcome(
            self._fields(current, None),
            [_scaling(ConditionStatus.FALSE, Reason.SCALER_CONFLICT, message)],
            ready=Verdict.not_ready(Reason.SCALER_CONFLICT, message),
        )

    def _decided(self, current: int, decision: Decision) -> ScalingOutcome:
        """Status fields and ScalingActive after a decision (False when the metric is unknown)."""
        if decision.action is Action.UNKNOWN:
            condition = _scaling(ConditionStatus.FALSE, Reason.METRIC_UNKNOWN, decision.reason)
        else:
            condition = _scaling(ConditionStatus.TRUE, Reason.SCALING, decision.reason)
        return ScalingOutcome(self._fields(current, decision.desired), [condition])

    def _current(self, seen: int) -> int:
        """The replicas the Deployment has, or is about to have after our own recent write."""
        if self._requested is not None:
            wanted, when = self._requested
            if seen == wanted or time.monotonic() - when > OWN_WRITE_GRACE:
                self._requested = None
            else:
                return wanted
        return seen

    def _update_rate(self, totals: GroupTotals, now: float, ready: int) -> None:
        """The per-replica completion rate, smoothed (decisions.rates)."""
        progress = Progress.of(totals, now, ready)
        measured = completion_rate(self._progress, progress) if progress is not None else None
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
    ) -> None:
        if decision.desired < current and decision.desired > 0:
            await self._mark_for_deletion(namespace, deployment, group, binding, keys)
        try:
            await self.ctx.kube.scale(namespace, deployment, decision.desired)
        except KubeError as exc:
            logger.warning("scaling %s/%s failed: %s", namespace, deployment, exc)
            return
        self._requested = (decision.desired, time.monotonic())
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
            return
        for pod, cost in deletion_costs(pods, pending).items():
            annotations = pods[pod]["metadata"].get("annotations") or {}
            if annotations.get(DELETION_COST) == str(cost):
                continue
            with contextlib.suppress(KubeError):  # a pod gone meanwhile needs no cost
                await self.ctx.kube.merge_patch(rq.PODS, namespace, pod, deletion_cost_patch(cost))

    async def _keep_owned_deployment(
        self,
        spec: ConsumerGroupSpec,
        group: str,
        binding: StreamBinding,
        deployment: str,
        policy: Autoscaling,
    ) -> None:
        """Create the Deployment from the template, and keep its template in step (the
        Deployment watch tells us what exists and its template hash: no GET per poll)."""
        if binding.spec is None:
            return
        namespace = self.body["metadata"]["namespace"]
        initial = policy.min_replicas if policy.enabled else 1
        wanted = consumer_deployment(
            owner=self.body,
            name=deployment,
            spec=spec,
            stream=binding.spec,
            group=group,
            replicas=initial,
        )
        state = self.ctx.deployments.get((namespace, deployment))
        try:
            if state is None:
                await self.ctx.kube.create(rq.DEPLOYMENTS, namespace, wanted)
                self.ctx.deployments[(namespace, deployment)] = deployment_state(wanted)
                await self.writer.event(
                    "Normal",
                    "DeploymentCreated",
                    f"created Deployment {deployment!r} from the template",
                )
            elif state.get("template_hash") != wanted["metadata"]["annotations"][TEMPLATE_HASH]:
                await self.ctx.kube.merge_patch(
                    rq.DEPLOYMENTS, namespace, deployment, template_patch(wanted)
                )
                state["template_hash"] = wanted["metadata"]["annotations"][TEMPLATE_HASH]
                await self.writer.event(
                    "Normal",
                    "DeploymentUpdated",
                    f"updated Deployment {deployment!r} to the new template",
                )
        except Conflict:
            pass  # created meanwhile (the watch will tell us): nothing to do
        except KubeError as exc:
            logger.warning("keeping Deployment %s/%s failed: %s", namespace, deployment, exc)

    def _watch(self, poller: Poller, keys: Sequence[str], group: str) -> None:
        waker = poller.waker()
        if self._waker is not None and self._waker is not waker:
            self._waker.unwatch(self.me)
        self._waker = waker
        waker.watch(self.me, keys, group)


def _deployment_missing(namespace: str, deployment: str) -> ScalingOutcome:
    message = f"Deployment {deployment!r} not found in namespace {namespace!r}"
    return ScalingOutcome(
        conditions=[_scaling(ConditionStatus.FALSE, Reason.DEPLOYMENT_NOT_FOUND, message)],
        ready=Verdict.not_ready(Reason.DEPLOYMENT_NOT_FOUND, message),
    )


def _scaling(status: ConditionStatus, reason: Reason, message: str) -> Verdict:
    return Verdict(ConditionType.SCALING_ACTIVE, status, reason, message)
