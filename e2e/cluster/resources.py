"""What the emulated API server serves: built-in resources and resources from CRD objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kmock

STANDARD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "log": ("get",),
}

# Field selectors each built-in kind supports besides metadata.name/metadata.namespace
# (from the API server's field label conversion functions).
_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


@dataclass(frozen=True)
class ScalePaths:
    """Where a resource keeps what its /scale subresource shows (as in a CRD's subresources.scale)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None  # a path to a selector *string*; None: built-in spec.selector


@dataclass
class ResourceType:
    group: str
    version: str  # the storage (and preferred) version
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    versions: tuple[str, ...] = ()  # served versions; defaults to (version,)
    subresources: frozenset[str] = frozenset()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_generation: bool = False
    custom: bool = False  # defined by a CRD object
    scale: ScalePaths | None = None
    field_selectors: tuple[str, ...] = ()
    printer_columns: tuple[Mapping[str, Any], ...] = ()
    # The storage version's openAPIV3Schema: enforced on every write, like kube-apiserver.
    schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.versions = self.versions or (self.version,)
        if self.scale is not None:
            self.subresources = self.subresources | {"scale"}

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def storage(self) -> kmock.resource:
        """The key under which kmock's ObjectsArray stores objects of this resource."""
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        """How error messages name it: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """How validation messages name it: ``Pod``, ``ConsumerGroup.streamherd.io``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str | None = None) -> str:
        version = version or self.version
        return f"{self.group}/{version}" if self.group else version

    def supports_field(self, path: str) -> bool:
        return path in ("metadata.name", "metadata.namespace") or path in self.field_selectors


def _t(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    cluster: bool = False,
    sub: tuple[str, ...] = (),
    short: tuple[str, ...] = (),
    gen: bool = False,
    cats: tuple[str, ...] = (),
    fields: tuple[str, ...] = (),
    scale: bool = False,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=not cluster,
        subresources=frozenset(sub),
        short_names=short,
        has_generation=gen,
        categories=cats,
        field_selectors=fields,
        scale=ScalePaths() if scale else None,
    )


def builtin_types() -> list[ResourceType]:
    return [
        _t(
            "",
            "v1",
            "namespaces",
            "Namespace",
            cluster=True,
            sub=("status",),
            short=("ns",),
            fields=("status.phase",),
        ),
        _t(
            "",
            "v1",
            "nodes",
            "Node",
            cluster=True,
            sub=("status",),
            short=("no",),
            fields=("spec.unschedulable",),
        ),
        _t(
            "",
            "v1",
            "pods",
            "Pod",
            sub=("status", "log"),
            short=("po",),
            cats=("all",),
            fields=_POD_FIELDS,
        ),
        _t("", "v1", "events", "Event", short=("ev",), fields=_EVENT_FIELDS),
        _t("", "v1", "secrets", "Secret", fields=("type",)),
        _t("", "v1", "configmaps", "ConfigMap", short=("cm",)),
        _t("", "v1", "services", "Service", sub=("status",), short=("svc",), cats=("all",)),
        _t("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
        _t(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            sub=("status",),
            short=("deploy",),
            gen=True,
            cats=("all",),
            scale=True,
        ),
        _t(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            sub=("status",),
            short=("rs",),
            gen=True,
            cats=("all",),
            scale=True,
            fields=("status.replicas",),
        ),
        _t(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            sub=("status",),
            short=("sts",),
            gen=True,
            cats=("all",),
            scale=True,
        ),
        _t(
            "batch",
            "v1",
            "jobs",
            "Job",
            sub=("status",),
            gen=True,
            cats=("all",),
            fields=("status.successful",),
        ),
        _t(
            "batch",
            "v1",
            "cronjobs",
            "CronJob",
            sub=("status",),
            short=("cj",),
            gen=True,
            cats=("all",),
        ),
        _t(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            sub=("status",),
            short=("hpa",),
            gen=True,
            cats=("all",),
        ),
        _t(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            sub=("status",),
            short=("pdb",),
            gen=True,
        ),
        _t("coordination.k8s.io", "v1", "leases", "Lease"),
        _t(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            cluster=True,
            sub=("status",),
            short=("crd", "crds"),
            gen=True,
        ),
        _t("rbac.authorization.k8s.io", "v1", "roles", "Role"),
        _t("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
        _t("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", cluster=True),
        _t(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            cluster=True,
        ),
    ]


def type_from_crd(crd: Mapping[str, Any]) -> ResourceType:
    """The resource a CustomResourceDefinition object declares."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not spec.get("group") or not names.get("plural") or not names.get("kind") or not versions:
        raise ValueError("a CRD needs spec.group, spec.names.plural/kind and a served version")
    storage = next((v for v in versions if v.get("storage")), versions[0])
    subresources = storage.get("subresources") or {}
    scale = subresources.get("scale")
    return ResourceType(
        group=spec["group"],
        version=storage["name"],
        versions=tuple([storage["name"]] + [v["name"] for v in versions if v is not storage]),
        plural=names["plural"],
        singular=names.get("singular", ""),
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        subresources=frozenset(k for k in subresources if k == "status"),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        has_generation=True,
        custom=True,
        scale=None
        if scale is None
        else ScalePaths(
            spec_replicas=scale.get("specReplicasPath", ".spec.replicas"),
            status_replicas=scale.get("statusReplicasPath", ".status.replicas"),
            label_selector=scale.get("labelSelectorPath"),
        ),
        field_selectors=tuple(
            f["jsonPath"].lstrip(".") for f in storage.get("selectableFields") or ()
        ),
        printer_columns=tuple(storage.get("additionalPrinterColumns") or ()),
        schema=(storage.get("schema") or {}).get("openAPIV3Schema"),
    )


def kopf_peering_crds() -> list[dict[str, Any]]:
    """kopf's peering CRDs (as kopf's docs install them), so peering works like in a cluster."""

    def crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kopf.dev"},
            "spec": {
                "group": "kopf.dev",
                "scope": scope,
                "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }

    return [
        crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        crd("KopfPeering", "kopfpeerings", "Namespaced"),
    ]
