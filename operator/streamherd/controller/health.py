"""A ConsumerGroup's health (decisions/health.py), fed by its loop with every poll: the
condition ``Healthy``, the metric ``streamherd_group_health`` and an Event on each change.

The history lives in this loop's memory only: after a restart (or on a second operator
replica taking over) it is rebuilt over one window, during which a group with a backlog is
Unknown (the condition says "judging"). Events are posted on changes between known states
(OK, Lagging, Stalled, Stopped); the last one announced is read back from the status at
start, so a restart does not announce the same state twice. Unknown has its own channels
(Ready=False with the cause, NaN metrics) and is not announced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.controller.consumers import deployment_name
from streamherd.controller.context import Context
from streamherd.controller.reporting import StatusWriter
from streamherd.decisions.conditions import Verdict, condition
from streamherd.decisions.health import HealthState, Sample, judge
from streamherd.decisions.totals import GroupTotals

STATUS = {
    HealthState.OK: ConditionStatus.TRUE,
    HealthState.LAGGING: ConditionStatus.FALSE,
    HealthState.STALLED: ConditionStatus.FALSE,
    HealthState.STOPPED: ConditionStatus.FALSE,
    HealthState.UNKNOWN: ConditionStatus.UNKNOWN,
}
REASON = {
    HealthState.OK: Reason.OK,
    HealthState.LAGGING: Reason.LAGGING,
    HealthState.STALLED: Reason.STALLED,
    HealthState.STOPPED: Reason.STOPPED,
    HealthState.UNKNOWN: Reason.UNKNOWN,
}
EVENT_REASON = {
    HealthState.OK: "Healthy",
    HealthState.LAGGING: "Lagging",
    HealthState.STALLED: "Stalled",
    HealthState.STOPPED: "Stopped",
}


class HealthWatch:
    def __init__(self, ctx: Context, body: Mapping[str, Any], writer: StatusWriter) -> None:
        self.ctx, self.writer = ctx, writer
        meta = body["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.history: tuple[Sample, ...] = ()
        self.labels: tuple[str, str, str] | None = None
        before = condition(body.get("status"), ConditionType.HEALTHY)
        reason = before.get("reason") if before else None
        self.announced = next((s for s in EVENT_REASON if REASON[s] == reason), None)

    async def step(
        self,
        spec: ConsumerGroupSpec,
        group: str,
        totals: GroupTotals,
        taken_at: float,
        scaling: Mapping[str, Any],
    ) -> Verdict:
        """Judge this poll; set the metric; post an Event if the state changed."""
        ready = None
        if spec.consumers is not None:
            deployment = deployment_name(self.name, spec)
            state = self.ctx.deployments.get((self.namespace, deployment or ""))
            ready = int(state.get("ready") or 0) if state else 0
        autoscaled = spec.autoscaling is not None and spec.autoscaling.enabled
        sample = Sample(
            at=taken_at,
            backlog=totals.backlog,
            pending=totals.pending,
            entries_read=totals.entries_read,
            consumers=totals.consumers,
            ready_replicas=ready,
            parked=autoscaled and scaling.get("desiredReplicas") == 0,
        )
        health = judge(self.history, sample, spec.health.window.seconds)
        self.history = health.history
        self.set_metric(group, health.state)
        if health.state is not HealthState.UNKNOWN and health.state is not self.announced:
            if not (self.announced is None and health.state is HealthState.OK):
                await self.writer.event(
                    "Normal" if health.state is HealthState.OK else "Warning",
                    EVENT_REASON[health.state],
                    # The numbers here, once: the condition's message carries none.
                    f"group {group!r}: {health.message} (backlog {totals.backlog.display()})",
                )
            self.announced = health.state
        return Verdict(
            ConditionType.HEALTHY, STATUS[health.state], REASON[health.state], health.message
        )

    def set_metric(self, group: str, state: HealthState) -> None:
        self.labels = (self.namespace, self.name, group)
        for each in HealthState:
            self.ctx.metrics.health.labels(*self.labels, str(each)).set(1 if each is state else 0)

    def unknown(self) -> None:
        """The group is not measured now (its stream not ready, paused, ...): the metric says
        Unknown. The history stays: what it saw is still true."""
        if self.labels is not None:
            self.set_metric(self.labels[2], HealthState.UNKNOWN)
