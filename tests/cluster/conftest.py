"""Shared helpers for the emulator's own tests: a plain HTTP client and a throwaway CRD."""

from __future__ import annotations

from typing import Any

import pytest
from e2e.cluster.client import KubeHTTP

WIDGETS = "/apis/test.streamherd.io/v1/namespaces/default/widgets"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.streamherd.io"},
    "spec": {
        "group": "test.streamherd.io",
        "scope": "Namespaced",
        "names": {
            "kind": "Widget",
            "plural": "widgets",
            "singular": "widget",
            "shortNames": ["wd"],
        },
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
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Colour", "type": "string", "jsonPath": ".spec.colour", "priority": 1},
                ],
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
            }
        ],
    },
}


def widget(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "test.streamherd.io/v1", "kind": "Widget", "metadata": meta, "spec": spec}


@pytest.fixture
def http(kube_api: Any) -> KubeHTTP:
    return KubeHTTP(kube_api.url)


@pytest.fixture
def widgets(http: KubeHTTP) -> str:
    """Install the Widget CRD through the API; returns the collection path in `default`."""
    reply = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    assert reply.status == 201, reply.body
    return WIDGETS
