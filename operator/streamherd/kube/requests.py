"""Kubernetes API requests as plain data: building one does no I/O (as in lightkube), so
every request the operator makes can be unit-tested without a server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if sub is not None:
            base += f"/{sub}"
        return base


SECRETS = Resource("", "v1", "secrets", "Secret")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob")
SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
REDIS_STREAMS = Resource("streamherd.io", "v1alpha1", "redisstreams", "RedisStream")
CONSUMER_GROUPS = Resource("streamherd.io", "v1alpha1", "consumergroups", "ConsumerGroup")
RETENTION_POLICIES = Resource("streamherd.io", "v1alpha1", "retentionpolicies", "RetentionPolicy")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str = JSON

    @property
    def resource(self) -> str:
        """What the request is about, for metrics: "consumergroups", "deployments/scale"."""
        parts = self.path.strip("/").split("/")
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:]  # api/v1 | apis/<group>/<v>
        if parts[:1] == ["namespaces"] and len(parts) > 2:
            parts = parts[2:]
        if not parts:
            return "?"
        return parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")

    def payload(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body).encode()


def get(resource: Resource, namespace: str, name: str) -> Request:
    return Request("GET", resource.path(namespace, name))


def list_(resource: Resource, namespace: str, label_selector: str | None = None) -> Request:
    params = {"labelSelector": label_selector} if label_selector else {}
    return Request("GET", resource.path(namespace), params)


def create(resource: Resource, namespace: str, body: dict[str, Any]) -> Request:
    return Request("POST", resource.path(namespace), body=body)


def merge_patch(
    resource: Resource, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
) -> Request:
    return Request(
        "PATCH", resource.path(namespace, name, sub), body=patch, content_type=MERGE_PATCH
    )


def delete(resource: Resource, namespace: str, name: str) -> Request:
    return Request("DELETE", resource.path(namespace, name))


def patch_status(resource: Resource, namespace: str, name: str, status: dict[str, Any]) -> Request:
    """Merge-patch the status subresource: keys set to None are removed."""
    return merge_patch(resource, namespace, name, {"status": status}, sub="status")


def patch_scale(namespace: str, name: str, replicas: int) -> Request:
    return merge_patch(DEPLOYMENTS, namespace, name, {"spec": {"replicas": replicas}}, sub="scale")


def event(
    involved: dict[str, Any],
    *,
    type_: str,
    reason: str,
    message: str,
    component: str = "streamherd",
    now: datetime | None = None,
) -> Request:
    """A core/v1 Event about ``involved`` (an object's body: apiVersion, kind, metadata)."""
    meta = involved.get("metadata", {})
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = meta.get("namespace", "default")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'streamherd')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": component},
        "reportingComponent": f"streamherd.io/{component}",
        "reportingInstance": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    return create(EVENTS, namespace, body)
