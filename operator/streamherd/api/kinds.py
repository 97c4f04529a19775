"""The three kinds, their names, and their CustomResourceDefinitions (built from the models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from streamherd.api.base import API_GROUP, API_VERSION, ApiModel
from streamherd.api.consumergroup import ConsumerGroupSpec, ConsumerGroupStatus
from streamherd.api.redisstream import RedisStreamSpec, RedisStreamStatus
from streamherd.api.retentionpolicy import RetentionPolicySpec, RetentionPolicyStatus
from streamherd.api.schema import structural_schema
from streamherd.api.status import StatusModel

CATEGORY = "streamherd"
_READY = '.status.conditions[?(@.type=="Ready")]'


def _column(
    name: str, path: str, type_: str = "string", priority: int = 0, **extra: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        out["priority"] = priority
    out.update(extra)
    return out


_AGE = _column("Age", ".metadata.creationTimestamp", "date")
_READY_COLUMN = _column("Ready", f"{_READY}.status")
_REASON_COLUMN = _column("Reason", f"{_READY}.reason", priority=1)


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_name: str
    spec: type[ApiModel]
    status: type[StatusModel]
    description: str
    printer_columns: list[dict[str, Any]] = field(default_factory=list)

    group = API_GROUP
    version = API_VERSION

    @property
    def api_version(self) -> str:
        return f"{API_GROUP}/{API_VERSION}"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    def crd(self) -> dict[str, Any]:
        """The CustomResourceDefinition, as the API server takes it."""
        schema = {
            "type": "object",
            "description": self.description,
            "required": ["spec"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": structural_schema(self.spec),
                "status": structural_schema(self.status, defaults=False),
            },
        }
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.crd_name},
            "spec": {
                "group": API_GROUP,
                "scope": "Namespaced",
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.singular,
                    "shortNames": [self.short_name],
                    "categories": [CATEGORY],
                },
                "versions": [
                    {
                        "name": API_VERSION,
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": self.printer_columns,
                        "schema": {"openAPIV3Schema": schema},
                    }
                ],
            },
        }


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors/aliases: every CRD node spelled out, as kubectl users expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_FIRST_KEYS = ("apiVersion", "kind", "metadata", "name", "type", "description", "required")


def _ordered(node: Any) -> Any:
    if isinstance(node, dict):
        keys = [k for k in _FIRST_KEYS if k in node] + [k for k in node if k not in _FIRST_KEYS]
        return {k: _ordered(node[k]) for k in keys}
    if isinstance(node, list):
        return [_ordered(item) for item in node]
    return node


def crd_yaml(kind: Kind) -> str:
    header = "# Generated from operator/streamherd/api by `make crds`. Do not edit.\n"
    body = yaml.dump(_ordered(kind.crd()), Dumper=_PlainDumper, sort_keys=False, width=100)
    return header + body


REDIS_STREAM = Kind(
    kind="RedisStream",
    plural="redisstreams",
    short_name="xstream",
    spec=RedisStreamSpec,
    status=RedisStreamStatus,
    description="A Redis stream key, or a family of keys by pattern, on a Redis endpoint.",
    printer_columns=[
        _column("Key", ".spec.key"),
        _column("Pattern", ".spec.keyPattern"),
        _column("Length", ".status.length", "integer"),
        _column("Groups", ".status.groups", "integer"),
        _column("Streams", ".status.matchedKeys", "integer", priority=1),
        _column("Durable", '.status.conditions[?(@.type=="Durable")].status'),
        _READY_COLUMN,
        _REASON_COLUMN,
        _AGE,
    ],
)

CONSUMER_GROUP = Kind(
    kind="ConsumerGroup",
    plural="consumergroups",
    short_name="xgroup",
    spec=ConsumerGroupSpec,
    status=ConsumerGroupStatus,
    description=(
        "A Redis consumer group on a RedisStream, the Deployment that consumes it, its "
        "autoscaling and the recovery of its pending entries."
    ),
    printer_columns=[
        _column("Stream", ".status.stream"),
        _column("Group", ".status.group"),
        _column("Pending", ".status.pending", "integer"),
        _column("Lag", ".status.lagDisplay"),
        _column("Lag Seconds", ".status.lagSeconds", "number"),
        _column("Replicas", ".status.replicas", "integer"),
        _column("Desired", ".status.desiredReplicas", "integer"),
        _column("Health", '.status.conditions[?(@.type=="Healthy")].reason'),
        _READY_COLUMN,
        _REASON_COLUMN,
        _column("Dead-lettered", ".status.deadLettered", "integer", priority=1),
        _column("Oldest Pending", ".status.oldestPendingAgeSeconds", "number", priority=1),
        _AGE,
    ],
)

RETENTION_POLICY = Kind(
    kind="RetentionPolicy",
    plural="retentionpolicies",
    short_name="xretention",
    spec=RetentionPolicySpec,
    status=RetentionPolicyStatus,
    description="How much history the RedisStreams that reference it keep.",
    printer_columns=[
        _column("Max Length", ".spec.maxLength", "integer"),
        _column("Max Age", ".spec.maxAge"),
        _column("Streams", ".status.streams", "integer"),
        _column("Trimmed", ".status.trimmedEntries", "integer", priority=1),
        _column("Deleted", ".status.deletedStreams", "integer", priority=1),
        _column("Dropped", ".status.unconsumedDropped", "integer", priority=1),
        _READY_COLUMN,
        _REASON_COLUMN,
        _AGE,
    ],
)

KINDS: tuple[Kind, ...] = (REDIS_STREAM, CONSUMER_GROUP, RETENTION_POLICY)
