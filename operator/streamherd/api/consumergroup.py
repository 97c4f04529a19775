"""ConsumerGroup: a Redis consumer group, the Deployment that consumes it, and its care."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from streamherd.api.base import (
    ApiModel,
    LocalObjectReference,
    RedisKey,
    Rule,
    at_least,
    exactly_one,
    immutable,
    unchanged,
)
from streamherd.api.durations import Duration, duration
from streamherd.api.redisstream import DeletionPolicy
from streamherd.api.status import StatusModel
from streamherd.exactness import Exactness

# "$" (only new entries), "0" (the whole stream), or an entry id "<ms>-<seq>" / "<ms>".
START_ID_PATTERN = r"^(\$|0|[0-9]{1,20}(-[0-9]{1,20})?)$"
GROUP_NAME_PATTERN = r"^[^\s]+$"


class Metric(StrEnum):
    BACKLOG = "Backlog"
    """lag + pending: everything the group has not finished. The default."""
    PENDING = "Pending"
    """Entries delivered but not acknowledged (the PEL): what KEDA's default mode reads."""
    LAG = "Lag"
    """Entries not yet delivered to the group."""


class RecoveryStrategy(StrEnum):
    REQUEUE = "Requeue"
    """Copy stale entries to the stream's tail and ack the original: works with any consumer."""
    CLAIM = "Claim"
    """XCLAIM stale entries to live consumers: only for consumers that read their own history."""


class JanitorMode(StrEnum):
    OPERATOR = "Operator"
    """The operator runs the janitor on a timer."""
    CRON_JOB = "CronJob"
    """The operator keeps a CronJob that runs `streamherd janitor`."""


# The pod template is a core Kubernetes type; the CRD keeps it open (the API server's own
# Deployment validation checks it when the operator creates the Deployment) but requires
# at least one container with a name and an image.
PodTemplate = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "A pod template, as in a Deployment's spec.template.",
            "required": ["spec"],
            "properties": {
                "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "spec": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "required": ["containers"],
                    "properties": {
                        "containers": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 32,
                            "items": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                                "required": ["name", "image"],
                                "properties": {
                                    "name": {"type": "string", "maxLength": 63},
                                    "image": {"type": "string", "maxLength": 1024},
                                },
                            },
                        }
                    },
                },
            },
        }
    ),
]


class Consumers(ApiModel):
    """The consumer Deployment: an existing one, or one the operator owns."""

    rules = (
        exactly_one("deploymentRef", "template", "set exactly one of deploymentRef or template"),
    )

    deployment_ref: LocalObjectReference | None = None
    """An existing Deployment in the same namespace whose replicas streamherd drives."""
    template: PodTemplate | None = None
    """A pod template; streamherd owns a Deployment made from it."""


class ScalingRules(ApiModel):
    """How fast replicas may move in one direction."""

    stabilization_window: Duration = duration("0s")
    """Recommendations over this past window are considered (scale-down: the highest wins)."""
    max_step: Annotated[int | None, Field(ge=1, le=10000)] = None
    """At most this many replicas added or removed per decision; unlimited when unset."""


class Autoscaling(ApiModel):
    """Scale the consumer Deployment on the group's backlog."""

    rules = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            check=lambda m: m.min_replicas <= m.max_replicas,
        ),
    )

    enabled: bool = True
    """Scale the Deployment. When false, replicas are left alone and only observed."""
    min_replicas: Annotated[int, Field(ge=0, le=10000)] = 0
    """Replicas when idle; 0 scales to zero (and wakes on the first message)."""
    max_replicas: Annotated[int, Field(ge=1, le=10000)] = 10
    """Upper bound on replicas."""
    metric: Metric = Metric.BACKLOG
    """What to scale on."""
    target_per_replica: Annotated[int, Field(ge=1)] = 100
    """Desired metric value per replica: replicas = ceil(metric / targetPerReplica)."""
    target_drain_time: Annotated[Duration, at_least("1s")] | None = None
    """Instead: enough replicas to drain the backlog within this time at the measured rate."""
    activation_threshold: Annotated[int, Field(ge=0)] = 0
    """From zero, wake up when the metric exceeds this."""
    poll_interval: Annotated[Duration, at_least("100ms")] = duration("2s")
    """How often the group is measured."""
    scale_up: ScalingRules = ScalingRules()
    """Scale-up behaviour: immediate by default."""
    scale_down: ScalingRules = ScalingRules(stabilization_window=duration("30s"))
    """Scale-down behaviour: the highest recommendation of the last 30s by default."""
    idle_before_zero: Duration = duration("60s")
    """How long the backlog must stay at zero before going from one replica to zero."""


class DeadLetter(ApiModel):
    """Where poison messages go."""

    stream: RedisKey | None = None
    """Dead-letter stream key. Default: "<key>:dlq", or "{<key>}:dlq" in Cluster mode (same slot)."""
    max_length: Annotated[int, Field(ge=1)] = 100000
    """Approximate cap on the dead-letter stream's length."""


class Recovery(ApiModel):
    """The janitor: recover stranded work, dead-letter poison messages, remove dead consumers."""

    enabled: bool = True
    """Run the janitor."""
    strategy: RecoveryStrategy = RecoveryStrategy.REQUEUE
    """How stale entries are handed back."""
    min_idle: Annotated[Duration, at_least("1s")] = duration("60s")
    """Entries pending longer than this are stale."""
    interval: Annotated[Duration, at_least("1s")] = duration("15s")
    """How often the janitor runs (mode Operator)."""
    max_deliveries: Annotated[int, Field(ge=1, le=1000)] = 5
    """An entry delivered this many times is dead-lettered instead of recovered."""
    dead_letter: DeadLetter = DeadLetter()
    """Dead-letter stream settings."""
    mode: JanitorMode = JanitorMode.OPERATOR
    """Where the janitor runs."""
    schedule: Annotated[str, Field(max_length=128, pattern=r"^\S+( \S+){4}$")] = "*/1 * * * *"
    """Cron schedule, for mode CronJob."""
    remove_idle_consumers_after: Duration = duration("1h")
    """Consumers with no pod and no pending entries are removed after this long idle."""
    batch_size: Annotated[int, Field(ge=1, le=10000)] = 500
    """Entries handled per Redis call."""
    time_budget: Annotated[Duration, at_least("100ms")] = duration("2s")
    """A run stops after this long and continues from its cursor next time."""


class Health(ApiModel):
    """How the group's health (condition Healthy) is judged."""

    window: Annotated[Duration, at_least("1s")] = duration("60s")
    """Health is judged over the polls of this window; longer than a pod takes to start."""


class ConsumerGroupSpec(ApiModel):
    """Desired state of a ConsumerGroup."""

    rules = (immutable("groupName", "groupName is immutable: create a new ConsumerGroup instead"),)

    stream_ref: Annotated[LocalObjectReference, unchanged("streamRef is immutable")]
    """The RedisStream (same namespace) the group reads."""
    group_name: Annotated[
        str | None, Field(min_length=1, max_length=256, pattern=GROUP_NAME_PATTERN)
    ] = None
    """Consumer group name in Redis; defaults to metadata.name."""
    start_id: Annotated[str, Field(max_length=48, pattern=START_ID_PATTERN)] = "$"
    """Where a new group starts: $ (new entries only), 0 (whole stream), or an entry id."""
    consumers: Consumers | None = None
    """The consumer Deployment. Without it the group is only created and observed."""
    autoscaling: Autoscaling | None = None
    """Autoscaling of the consumer Deployment."""
    recovery: Recovery = Recovery()
    """Recovery of stranded work and dead-lettering."""
    health: Health = Health()
    """How the group's health is judged."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """Delete: deleting the resource destroys the group in Redis."""


class ConsumerGroupStatus(StatusModel):
    """Observed state of a ConsumerGroup."""

    stream: Annotated[str | None, Field(max_length=512)] = None
    """The stream key, or key pattern."""
    group: Annotated[str | None, Field(max_length=256)] = None
    """The group's name in Redis."""
    streams: Annotated[int | None, Field(ge=0)] = None
    """Streams the group exists on (more than one for a key pattern)."""
    pending: Annotated[int | None, Field(ge=0)] = None
    """Entries delivered and not acknowledged (PEL size)."""
    pending_exactness: Exactness | None = None
    """Exact, or LowerBound when some of the group's streams could not be read."""
    lag: Annotated[int | None, Field(ge=0)] = None
    """Entries not yet delivered (see lagExactness)."""
    lag_exactness: Exactness | None = None
    """Whether lag is exact, clamped, a lower bound, or unknown."""
    lag_display: Annotated[str | None, Field(max_length=32)] = None
    """Lag for kubectl: "120", ">=1000", or "unknown"."""
    backlog: Annotated[int | None, Field(ge=0)] = None
    """lag + pending."""
    consumers: Annotated[int | None, Field(ge=0)] = None
    """Consumers known to Redis."""
    oldest_pending_age_seconds: Annotated[float | None, Field(ge=0)] = None
    """How long ago the oldest unfinished (pending) entry was added: Redis's clock minus the
    time in its id. A claim or redelivery does not reset it. Null when nothing is pending,
    or when the id's time is not a time (an id chosen by the producer, README)."""
    lag_seconds: Annotated[float | None, Field(ge=0)] = None
    """Lag in time: how long ago the oldest entry the group has not read yet was added
    (Redis's clock minus the time in the id of the first entry after last-delivered-id),
    the largest over the group's streams; 0 when nothing is unread (see lagSecondsExactness)."""
    lag_seconds_exactness: Exactness | None = None
    """Exact; LowerBound when some stream's could not be told; Unknown (lagSeconds null)."""
    replicas: Annotated[int | None, Field(ge=0)] = None
    """Current replicas of the consumer Deployment."""
    desired_replicas: Annotated[int | None, Field(ge=0)] = None
    """Replicas the autoscaler wants."""
    last_scale_time: datetime | None = None
    """When replicas were last changed."""
    last_scale_reason: Annotated[str | None, Field(max_length=1024)] = None
    """Why, in words: "backlog 4200 > 6 replicas x 500"."""
    recovered: Annotated[int | None, Field(ge=0)] = None
    """Entries recovered from stale or dead consumers (total)."""
    dead_lettered: Annotated[int | None, Field(ge=0)] = None
    """Entries moved to the dead-letter stream (total)."""
    consumers_removed: Annotated[int | None, Field(ge=0)] = None
    """Consumers removed from the group (total)."""
    last_janitor_run: datetime | None = None
    """When the janitor last ran."""
    janitor_cron_job: Annotated[str | None, Field(max_length=253)] = None
    """The janitor's CronJob the operator keeps (mode CronJob). Recorded so that a switch to
    mode Operator deletes it, and so that a group never in mode CronJob touches no CronJob
    (and needs no permission on them)."""
