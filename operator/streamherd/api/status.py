"""Status vocabulary shared by the kinds: conditions and their closed set of reasons."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from streamherd.api.base import ApiModel


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    READY = "Ready"
    """Everything the spec asks for is in place and observed."""
    PAUSED = "Paused"
    """The ``streamherd.io/paused`` annotation stops all actions."""
    SCALING_ACTIVE = "ScalingActive"
    """The autoscaler can read its metric and act on the Deployment."""
    DEAD_LETTERING = "DeadLettering"
    """Poison entries have a dead-letter stream they can be moved to."""
    HEALTHY = "Healthy"
    """The group keeps up, judged over a window of polls (reasons OK, Lagging, Stalled,
    Stopped, Unknown)."""
    DURABLE = "Durable"
    """The Redis endpoint's persistence and replication keep acknowledged writes."""
    RECOVERY_ISOLATED = "RecoveryIsolated"
    """Work the janitor recovers for this group reaches no other group's consumers."""
    RETENTION = "Retention"
    """Retention runs as its policy says: False (RetentionBlocked) while a group holds it
    back; on a RedisStream, False (PolicyNotFound) when its policy does not exist."""
    UNCONSUMED_DROPPED = "UnconsumedDropped"
    """True when hardMaxLength dropped entries some group had not consumed."""
    API_ACCESS = "ApiAccess"
    """Present (False, PermissionDenied) only while a request the resource can do without is
    refused: pod-deletion-cost before a scale-in, posting an Event. The message names the
    verb and resource and what is not done without them."""
    TLS_VERIFIED = "TLSVerified"
    """Present (False) only when spec.redis.tls.insecureSkipVerify turns off the check of the
    server's certificate and name."""


class Reason(StrEnum):
    """Why a condition is what it is. A closed set: alerts and scripts may match on it."""

    RECONCILED = "Reconciled"
    PAUSED = "Paused"
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    REDIS_UNAVAILABLE = "RedisUnavailable"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PERMISSION_DENIED = "PermissionDenied"
    API_UNAVAILABLE = "ApiUnavailable"
    API_REJECTED = "ApiRejected"
    TLS_FAILED = "TLSFailed"
    WRONG_KEY_TYPE = "WrongKeyType"
    STREAM_NOT_FOUND = "StreamNotFound"
    GROUP_NOT_FOUND = "GroupNotFound"
    STREAM_NOT_READY = "StreamNotReady"
    GROUP_OWNED_ELSEWHERE = "GroupOwnedElsewhere"
    SCALER_CONFLICT = "ScalerConflict"
    DEPLOYMENT_NOT_FOUND = "DeploymentNotFound"
    CROSS_SLOT = "CrossSlot"
    SHARED_STREAM = "SharedStream"
    METRIC_UNKNOWN = "MetricUnknown"
    SCALING = "Scaling"
    SCALING_DISABLED = "ScalingDisabled"
    REDIS_ERROR = "RedisError"
    INSECURE_SKIP_VERIFY = "InsecureSkipVerify"
    # Healthy
    OK = "OK"
    LAGGING = "Lagging"
    STALLED = "Stalled"
    STOPPED = "Stopped"
    UNKNOWN = "Unknown"
    # Durable
    FSYNC_ALWAYS_WITH_REPLICA = "FsyncAlwaysWithReplica"
    PERSISTENCE_FAILING = "PersistenceFailing"
    NO_PERSISTENCE = "NoPersistence"
    NO_APPEND_ONLY_FILE = "NoAppendOnlyFile"
    SNAPSHOTS_ONLY = "SnapshotsOnly"
    FSYNC_NEVER = "FsyncNever"
    FSYNC_EVERY_SECOND = "FsyncEverySecond"
    NO_REPLICA = "NoReplica"
    RETENTION_BLOCKED = "RetentionBlocked"
    POLICY_NOT_FOUND = "PolicyNotFound"
    HARD_MAX_LENGTH = "HardMaxLength"


class Condition(ApiModel):
    """The state of one aspect of the resource, as Kubernetes API conventions define it."""

    model_config = ConfigDict(extra="ignore")

    type: Annotated[str, Field(max_length=64)]
    """Type of condition, such as Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[
        str, Field(max_length=64, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    ]
    """A CamelCase word a program can match on."""
    message: Annotated[str, Field(max_length=4096)] = ""
    """What happened and, when something is wrong, what to do about it."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """The .metadata.generation this condition was computed from."""


class StatusModel(ApiModel):
    """Base of the status models: lenient on read, so an upgrade never breaks parsing."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """The .metadata.generation the operator last acted on."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """Latest observations of the resource's state."""
