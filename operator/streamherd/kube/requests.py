"""Kubernetes API requests as plain data: building one does no I/O (as in lightkube), so
every request the operator makes can be unit-tested without a server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)
JSON = "application/json"
FIELD_MANAGER = "streamherd"
"""The field manager of everything the operator applies (server-side apply)."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str = JSON

    def _tail(self) -> list[str]:
        """The path after the group-version and namespace: [plural, name?, subresource?]."""
        parts = self.path.strip("/").split("/")
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:]  # api/v1 | apis/<group>/<v>
        if parts[:1] == ["namespaces"] and len(parts) > 2:
            parts = parts[2:]
        return parts

    @property
    def resource(self) -> str:
        """What the request is about, for metrics: "consumergroups", "deployments/scale"."""
        parts = self._tail()
        if not parts:
            return "?"
        return parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")

    @property
    def write(self) -> bool:
        """Whether the request changes something (the write budget counts these)."""
        return self.method in WRITE_METHODS

    @property
    def verb(self) -> str:
        """The RBAC verb the API server checks for this request: get, list, watch, create,
        update, patch, delete (what a PermissionDenied condition names)."""
        if self.method == "GET":
            if self.params.get("watch") in ("true", "1"):
                return "watch"
            return "get" if len(self._tail()) > 1 else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            self.method, self.method.lower()
        )

    @property
    def namespace(self) -> str | None:
        """The namespace of a namespaced request (None for cluster-scoped ones)."""
        parts = self.path.strip("/").split("/")
        if "namespaces" not in parts:
            return None
        at = parts.index("namespaces")
        return parts[at + 1] if at + 2 < len(parts) else None

    def describe(self) -> str:
        """What the request does, as RBAC sees it: "patch deployments/scale in namespace 'x'"."""
        where = f" in namespace {self.namespace!r}" if self.namespace else ""
        return f"{self.verb} {self.resource}{where}"

    def payload(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body).encode()


def get(resource: Resource, namespace: str, name: str) -> Request:
    return Request("GET", resource.path(namespace, name))


def list_(resource: Resource, namespace: str, label_selector: str | None = None) -> Request:
    params = {"labelSelector": label_selector} if label_selector else {}
    return Request("GET", resource.path(namespace), params)


def watch(
    resource: Resource, namespace: str, resource_version: str, timeout_seconds: int = 300
) -> Request:
    """A watch of one namespace's ``resource`` from ``resource_version`` (a LIST's), with
    bookmarks (they carry the resourceVersion to resume from)."""
    params = {
        "watch": "true",
        "resourceVersion": resource_version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(timeout_seconds),
    }
    return Request("GET", resource.path(namespace), params)


def create(resource: Resource, namespace: str, body: dict[str, Any]) -> Request:
    return Request("POST", resource.path(namespace), body=body)


def merge_patch(
    resource: Resource, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
) -> Request:
    return Request(
        "PATCH", resource.path(namespace, name, sub), body=patch, content_type=MERGE_PATCH
    )


def replace(resource: Resource, namespace: str, name: str, body: dict[str, Any]) -> Request:
    """PUT: the whole object; its metadata.resourceVersion makes it a compare-and-swap (409
    Conflict when someone wrote in between)."""
    return Request("PUT", resource.path(namespace, name), body=body)


def delete(resource: Resource, namespace: str, name: str) -> Request:
    return Request("DELETE", resource.path(namespace, name))


def apply(
    resource: Resource, namespace: str, name: str, body: dict[str, Any], *, force: bool = True
) -> Request:
    """Server-side apply of ``body`` (a fully specified intent) with our field manager: the
    fields we applied before and no longer do are removed, fields we own are set back to
    what we apply, fields other managers own are left alone; ``force`` takes over fields
    another manager changed (``kubectl edit`` drift of our fields is reverted)."""
    params = {"fieldManager": FIELD_MANAGER}
    if force:
        params["force"] = "true"
    return Request(
        "PATCH", resource.path(namespace, name), params, body=body, content_type=APPLY_PATCH
    )


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
    name: str | None = None,
) -> Request:
    """A core/v1 Event about ``involved`` (an object's body: apiVersion, kind, metadata);
    named ``name`` (the recorder's, so it can update the count), else generated."""
    meta = involved.get("metadata", {})
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = meta.get("namespace", "default")
    naming = {"name": name} if name else {"generateName": f"{meta.get('name', 'streamherd')}."}
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {**naming, "namespace": namespace},
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


def micro_time(at: datetime) -> str:
    """A MicroTime as the API server writes it (RFC 3339, microseconds, Z)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease(
    namespace: str,
    name: str,
    *,
    holder: str,
    duration_seconds: int,
    acquired: datetime,
    renewed: datetime,
    transitions: int,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """A coordination.k8s.io/v1 Lease held by ``holder``, as client-go's leaderelection writes
    it (LeaseLock). With ``resource_version``, a PUT of it is a compare-and-swap."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": LEASES.api_version,
        "kind": LEASES.kind,
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_seconds,
            "acquireTime": micro_time(acquired),
            "renewTime": micro_time(renewed),
            "leaseTransitions": transitions,
        },
    }
