"""The streamherd.io/v1alpha1 API: the single source of truth for CRDs, defaults and validation."""

from collections.abc import Mapping
from typing import Any

from streamherd.api.base import API_GROUP, API_VERSION
from streamherd.api.consumergroup import ConsumerGroupSpec, ConsumerGroupStatus
from streamherd.api.kinds import CONSUMER_GROUP, KINDS, REDIS_STREAM, RETENTION_POLICY, Kind
from streamherd.api.parsing import SpecError, SpecParser, parse
from streamherd.api.redisstream import RedisStreamSpec, RedisStreamStatus
from streamherd.api.retentionpolicy import RetentionPolicySpec, RetentionPolicyStatus

# Annotations users put on any of the kinds.
PAUSED_ANNOTATION = f"{API_GROUP}/paused"
"""``"true"``: the operator takes no action on this resource (condition Paused)."""
MANAGED_ANNOTATION = f"{API_GROUP}/managed"
"""``"false"``: deleting the resource leaves Redis untouched, whatever deletionPolicy says."""


def is_paused(metadata: Mapping[str, Any]) -> bool:
    return str((metadata.get("annotations") or {}).get(PAUSED_ANNOTATION, "")).lower() == "true"


def is_managed(metadata: Mapping[str, Any]) -> bool:
    return str((metadata.get("annotations") or {}).get(MANAGED_ANNOTATION, "")).lower() != "false"


__all__ = [
    "API_GROUP",
    "API_VERSION",
    "CONSUMER_GROUP",
    "KINDS",
    "MANAGED_ANNOTATION",
    "PAUSED_ANNOTATION",
    "REDIS_STREAM",
    "RETENTION_POLICY",
    "ConsumerGroupSpec",
    "ConsumerGroupStatus",
    "Kind",
    "RedisStreamSpec",
    "RedisStreamStatus",
    "RetentionPolicySpec",
    "RetentionPolicyStatus",
    "SpecError",
    "SpecParser",
    "is_managed",
    "is_paused",
    "parse",
]
